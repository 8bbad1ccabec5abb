"""Item embeddings from co-engagement: items engaged with from the same queries get close vectors.

The engagement log is read as a bipartite graph of queries and items, weighted by engagement
(clicks + saves + long clicks); implicit's alternating least squares factors it, and the item
factors, scaled to unit length, are the item's graph embedding. An item nobody engaged with gets
the zero vector.

A factorisation depends on the log it was fit on, so each one is stored in the workspace table
`graph_vectors` under a key (a hash of the log and the parameters), and a model records the key it
was trained with: it reads the same vectors later, even after the log has grown.
"""
from __future__ import annotations

import hashlib

import numpy as np

from relkit.errors import RelkitError

ITERATIONS = 15
REGULARIZATION = 0.05


def _engaged(ws) -> list[tuple[str, str, float]]:
    return ws.fetchall("""SELECT lower(trim(query)), item_id, sum(clicks + saves + long_clicks)
                          FROM engagement GROUP BY ALL HAVING sum(clicks + saves + long_clicks) > 0
                          ORDER BY 1, 2""")


def graph_key(rows: list[tuple[str, str, float]], dim: int) -> str:
    digest = hashlib.sha256(f"als {dim} {ITERATIONS} {REGULARIZATION}\n".encode())
    for query, item_id, weight in rows:
        digest.update(f"{query}\x1f{item_id}\x1f{weight}\n".encode())
    return digest.hexdigest()[:16]


def fit_item_vectors(rows: list[tuple[str, str, float]], dim: int) -> dict[str, np.ndarray]:
    """Unit item vectors of width `dim` from (query, item, engagement) rows (an item's vector is
    zero-padded when the log has fewer queries or items than `dim`)."""
    from implicit.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    if not rows:
        return {}
    queries = {q: n for n, q in enumerate(dict.fromkeys(r[0] for r in rows))}
    items = {i: n for n, i in enumerate(dict.fromkeys(r[1] for r in sorted(rows, key=lambda r: r[1])))}
    confidence = np.log1p(np.array([r[2] for r in rows], dtype=np.float32))
    matrix = csr_matrix((confidence, ([queries[r[0]] for r in rows], [items[r[1]] for r in rows])),
                        shape=(len(queries), len(items)))
    factors = max(1, min(dim, len(queries), len(items)))
    with threadpool_limits(1, "blas"):   # implicit's advice: its own threads, not OpenBLAS's
        model = AlternatingLeastSquares(factors=factors, regularization=REGULARIZATION, iterations=ITERATIONS,
                                        random_state=0, use_gpu=False, num_threads=1)
        model.fit(matrix, show_progress=False)
    vectors = np.zeros((len(items), dim), dtype=np.float32)
    vectors[:, :factors] = np.asarray(model.item_factors, dtype=np.float32)[:, :factors]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return {item_id: vectors[n] for item_id, n in items.items()}


def item_graph_vectors(ws, item_ids: list[str], dim: int, key: str | None = None) -> tuple[np.ndarray, str]:
    """(items x dim array in the order of `item_ids`, key). With `key`, the stored factorisation of
    that key; without, the current log's (fit now and stored unless the workspace is read-only)."""
    stored = ws.has_table("graph_vectors")
    if key is None:
        rows = _engaged(ws)
        key = graph_key(rows, dim)
        if not rows:
            raise RelkitError("the graph features need engagement with clicks, saves or long clicks: "
                              "import an engagement log (relkit import engagement) or leave out the graph group")
        if not (stored and ws.fetchone("SELECT 1 FROM graph_vectors WHERE key = ? LIMIT 1", [key])):
            vectors = fit_item_vectors(rows, dim)
            if not ws.read_only:
                import pyarrow as pa

                with ws.registered("_graph_vectors", {"item_id": list(vectors), "vector": list(vectors.values())},
                                   {"vector": pa.list_(pa.float32())}), ws.transaction():
                    ws.run("INSERT OR REPLACE INTO graph_vectors SELECT ?, item_id, vector FROM _graph_vectors", [key])
            return _ordered(vectors, item_ids, dim), key
    elif not stored or not ws.fetchone("SELECT 1 FROM graph_vectors WHERE key = ? LIMIT 1", [key]):
        raise RelkitError(f"the item graph embedding '{key}' the model was trained with is not in the workspace "
                          f"(table graph_vectors): train the student again")
    found = {i: np.asarray(v, dtype=np.float32)
             for i, v in ws.fetchall("SELECT item_id, vector FROM graph_vectors WHERE key = ?", [key])}
    return _ordered(found, item_ids, dim), key


def _ordered(vectors: dict[str, np.ndarray], item_ids: list[str], dim: int) -> np.ndarray:
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    for n, item_id in enumerate(item_ids):
        v = vectors.get(item_id)
        if v is not None:
            out[n] = v
    return out
