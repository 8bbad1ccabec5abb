"""The service's Prometheus metrics, as one object with a registry of its own (one per app, so
that several apps in a process, as in the tests, count apart)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("relkit_requests", "Requests by endpoint and status", ["endpoint", "status"],
                                registry=registry)
        self.latency = Histogram("relkit_request_seconds", "Request latency by endpoint", ["endpoint"],
                                 registry=registry, buckets=LATENCY_BUCKETS)
        self.candidates_scored = Counter("relkit_candidates_scored", "Candidates scored by the student",
                                         registry=registry)
        self.model_info = Gauge("relkit_model_info", "The served student (value 1)", ["version"], registry=registry)
        self.reloads = Counter("relkit_model_reloads", "Active-student changes picked up", ["outcome"],
                               registry=registry)
        self.query_cache = Counter("relkit_query_vectors", "Query embeddings from the cache (hit) or the encoder (miss)",
                                   ["result"], registry=registry)
        self.encode_batch = Histogram("relkit_query_encode_batch", "Queries per encoder call for cache misses",
                                      registry=registry, buckets=BATCH_BUCKETS)
        self.encode_wait = Histogram("relkit_query_encode_wait_seconds",
                                     "Wait of a cache miss from its first request to the start of its encoder call",
                                     registry=registry, buckets=LATENCY_BUCKETS)

    def serving(self, version: str, replaced: str | None = None) -> None:
        """The model info gauge names `version` (and no longer `replaced`)."""
        if replaced is not None:
            self.model_info.remove(replaced)
        self.model_info.labels(version).set(1)

    def exposition(self) -> str:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry).decode()
