"""A judge: an LLM, a prompt and its options, stored in the workspace as artifacts/judge-NAME, and
the labels it gave, stored in the label store (`relkit.labels`) as Parquet shards in
labels/judge-NAME, like a teacher's (whole shards or none, read through the `teacher_labels` view
under the name `judge:NAME`), so that judge labels go wherever a teacher's do.

Every label is kept with the model, the prompt's hash and the pair: asking again for a pair any
judge of the same model and prompt has answered costs nothing.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from relkit.config import from_dict
from relkit.errors import RelkitError
from relkit.judge.prompt import PromptBuilder, Shot, read_text_file
from relkit.labels import (JUDGE_PREFIX, LABELS_DIR, clear_strays, judge_name, labels_dir, next_shard_number,
                           refresh_view, shards, write_shard)
from relkit.scale import LabelScale
from relkit.text import DEFAULT_TEMPLATE, ItemTextTemplate
from relkit.workspace import ITEM_RECORD_COLUMNS, SPLITS, Workspace

logger = logging.getLogger(__name__)
KIND = "judge"
PREFIX = JUDGE_PREFIX    # judge labels are the teacher labels of `judge:NAME`
BACKENDS = ("endpoint", "local")
FLUSH_SECONDS = 30.0     # answers are written at least this often, whatever the shard size
FILES = {"prompt": "prompt.txt", "guidelines": "guidelines.txt", "shots": "shots.json"}


@dataclass(frozen=True)
class JudgeSpec:
    """What makes a judge, as saved in artifacts/judge-NAME/relkit.json (never an API key: only the
    name of the environment variable that holds it)."""

    name: str
    model: str                        # endpoint: the served model's name; local: a folder, hub id or 'smollm2'
    backend: str = "local"            # endpoint | local
    endpoint: str | None = None       # an OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
    gguf_file: str | None = None      # local: a GGUF file inside `model`
    key_env: str = "OPENAI_API_KEY"   # endpoint: the environment variable holding the key
    concurrency: int = 4              # endpoint: requests in flight
    rpm: float = 0.0                  # endpoint: requests per minute at most; 0 = no cap
    retries: int = 5                  # endpoint: tries again on 429, 5xx, timeouts, dropped connections
    timeout: float = 60.0             # endpoint: seconds per request
    backoff: float = 1.0              # endpoint: seconds before the first retry, doubling with each
    max_tokens: int = 8               # endpoint: answer tokens
    logprobs: bool = True             # endpoint: ask for the answer token's log-probabilities
    batch_size: int = 8               # local: prompts per forward pass
    device: str = "auto"              # local: auto | cpu | cuda
    fields: str = ""                  # item text fields, as `relkit teach --fields`; "" = all
    shots: int = 0                    # few-shot examples drawn from the train judgments
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise RelkitError(f"a judge's name is a plain folder name, got '{self.name}'")
        if self.backend not in BACKENDS:
            raise RelkitError(f"unknown judge backend '{self.backend}'; one of {', '.join(BACKENDS)}")
        if self.backend == "endpoint" and not self.endpoint:
            raise RelkitError("an endpoint judge needs --endpoint URL (an OpenAI-compatible base URL)")
        if self.backend == "local" and self.endpoint:
            raise RelkitError("a local judge takes no --endpoint")
        if self.shots < 0:
            raise RelkitError("--shots must be 0 or more")
        if self.fields:
            ItemTextTemplate.parse(self.fields)

    @property
    def label_name(self) -> str:
        return PREFIX + self.name

    @property
    def model_id(self) -> str:
        """The model as the cache knows it: the same weights read another way give other labels."""
        if self.backend == "endpoint":
            return f"endpoint:{self.model}"
        return f"local:{self.model}" + (f":{self.gguf_file}" if self.gguf_file else "")


def judge_dir(ws: Workspace, name: str) -> Path:
    return ws.artifacts / f"{KIND}-{name}"


def _local_model(spec: JudgeSpec) -> tuple[str, str | None]:
    if spec.model == "smollm2":
        from relkit.hf import smollm2

        return smollm2(spec.gguf_file, "judge")
    from relkit.features.embeddings import resolve_model

    return resolve_model(spec.model), spec.gguf_file


@dataclass(frozen=True)
class JudgeRun:
    """What one judging run did."""

    name: str
    asked: int          # distinct pairs asked for
    held: int           # already labeled by this judge
    reused: int         # labeled by another judge of the same model and prompt: copied, not asked again
    judged: int         # answered by the model in this run
    unparsed: int       # of those, answers that named no level
    requests: int       # requests sent (endpoint; retries included) or forward passes (local)
    retries: int
    prompt_tokens: int
    completion_tokens: int
    shards: int
    seconds: float

    def summary(self) -> str:
        rate = self.judged / self.seconds if self.seconds else 0.0
        return (f"judge:{self.name}: {self.asked:,} pairs, {self.held:,} already labeled, {self.reused:,} reused from "
                f"the cache, {self.judged:,} judged ({rate:.1f}/s) in {self.requests:,} requests "
                f"({self.retries:,} retries), {self.prompt_tokens:,} prompt + {self.completion_tokens:,} answer "
                f"tokens, {self.unparsed:,} answers named no level; {self.shards:,} shards written")


class Judge:
    """A stored judge. `judge(ws, pairs)` gives an (n, K) array of level distributions, a row of
    NaN where the answer named no level; labels are cached in the workspace.

        judge = load_judge(ws, "smol")
        judge.judge(ws, [("q1", "item-7"), ("q2", "item-9")]).shape
        # -> (2, 5)
    """

    def __init__(self, spec: JudgeSpec, scale: LabelScale, builder: PromptBuilder, path: Path | None = None):
        self.spec, self.scale, self.builder, self.path = spec, scale, builder, path
        self._backend = None

    @property
    def name(self) -> str:
        return self.spec.label_name

    @property
    def prompt_hash(self) -> str:
        return self.builder.hash

    def backend(self):
        from relkit.judge.backends import EndpointBackend, LocalBackend

        if self._backend is None:
            s = self.spec
            if s.backend == "endpoint":
                self._backend = EndpointBackend(s.endpoint, s.model, self.scale, key_env=s.key_env,
                                                concurrency=s.concurrency, rpm=s.rpm, retries=s.retries,
                                                timeout=s.timeout, max_tokens=s.max_tokens, logprobs=s.logprobs,
                                                backoff=s.backoff)
            else:
                source, gguf = _local_model(s)
                self._backend = LocalBackend(source, self.scale, gguf_file=gguf, batch_size=s.batch_size,
                                             device=s.device)
        return self._backend

    def judge(self, ws: Workspace, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The distribution over the K levels of each (query_id, item_id), judging what no label holds yet."""
        self.run(ws, pairs)
        return self.labels(ws, pairs)

    def labels(self, ws: Workspace, pairs: list[tuple[str, str]]) -> np.ndarray:
        """This judge's stored labels of `pairs` ((n, K); NaN rows for unparsed or missing)."""
        k = self.scale.k
        out = np.full((len(pairs), k), np.nan)
        held = _read_labels(ws, [labels_dir(ws, self.name)], k, self.spec.model_id, self.prompt_hash)
        for row, pair in enumerate(pairs):
            found = held.get(tuple(pair))
            if found is not None and found["p"] is not None:
                out[row] = found["p"]
        return out

    def run(self, ws: Workspace, pairs: list[tuple[str, str]], shard_size: int = 100) -> JudgeRun:
        """Label the pairs this judge has no label of: from the cache when a judge of the same model
        and prompt has one, else by asking the model. Shards are written as answers arrive (every
        `shard_size` answers or FLUSH_SECONDS), so a failure keeps all that was paid for and a kill
        all but the last seconds; the error then says to run again."""
        from relkit.logs import progress

        started = time.perf_counter()
        if shard_size < 1:
            raise RelkitError("shard_size must be at least 1")
        k = self.scale.k
        wanted = list(dict.fromkeys((str(q), str(i)) for q, i in pairs))
        out = labels_dir(ws, self.name)
        out.mkdir(parents=True, exist_ok=True)
        clear_strays(out)
        others = [d for d in sorted((ws.path / LABELS_DIR).glob(f"{KIND}-*")) if d != out and d.is_dir()]
        mine = _read_labels(ws, [out], k, self.spec.model_id, self.prompt_hash)
        cache = _read_labels(ws, others, k, self.spec.model_id, self.prompt_hash) if others else {}
        todo = [p for p in wanted if p not in mine]
        reuse = [p for p in todo if p in cache]
        todo = [p for p in todo if p not in cache]
        shards = 0
        number = next_shard_number(out)
        if reuse:
            for start in range(0, len(reuse), 4096):
                write_shard(out, number + shards, self._table([cache[p] | {"pair": p} for p in reuse[start:start + 4096]]))
                shards += 1
        judged = unparsed = requests = retries = ptok = ctok = 0
        if todo:
            prompts = self._prompts(ws, todo)
            backend = self.backend()
            backend.check()
            ws.release()  # shards are files: other commands can use the workspace while the judge works
            local = self.spec.backend == "local"
            buffer: list[dict] = []
            flushed = time.monotonic()
            bar = progress(total=len(todo), desc=self.name, unit="pair")
            try:
                for answer in backend.answers(prompts):
                    judged += 1
                    unparsed += answer.proba is None
                    retries += answer.retries
                    requests += 0 if local else 1 + answer.retries
                    ptok, ctok = ptok + answer.prompt_tokens, ctok + answer.completion_tokens
                    buffer.append({"pair": todo[answer.index], "p": answer.proba, "source": answer.source,
                                   "answer": answer.text[:500], "prompt_tokens": answer.prompt_tokens,
                                   "completion_tokens": answer.completion_tokens})
                    # a shard when it is full, or every FLUSH_SECONDS: a kill loses at most that much paid work
                    if len(buffer) >= shard_size or time.monotonic() - flushed >= FLUSH_SECONDS:
                        write_shard(out, number + shards, self._table(buffer))
                        shards, buffer, flushed = shards + 1, [], time.monotonic()
                    bar.update(1)
                    bar.set_postfix(unparsed=unparsed, tokens=ptok + ctok)
            finally:
                if buffer:   # what was answered is kept, whatever stopped the run
                    write_shard(out, number + shards, self._table(buffer))
                    shards += 1
                bar.close()
                if local:
                    requests = -(-judged // max(1, self.spec.batch_size))
                refresh_view(ws)
        else:
            refresh_view(ws)
        return JudgeRun(self.spec.name, len(wanted), len(wanted) - len(reuse) - len(todo), len(reuse), judged,
                        unparsed, requests, retries, ptok, ctok, shards, time.perf_counter() - started)

    def _prompts(self, ws: Workspace, pairs: list[tuple[str, str]]) -> list[str]:
        cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
        with ws.registered("_judge_pairs", {"n": list(range(len(pairs))), "query_id": [q for q, _ in pairs],
                                            "item_id": [i for _, i in pairs]}, types=_int_n()):
            rows = ws.fetchall(f"""
                SELECT p.n, p.query_id, p.item_id, q.query, i.item_id IS NOT NULL, {cols}
                FROM _judge_pairs p LEFT JOIN queries q USING (query_id) LEFT JOIN item_records i USING (item_id)
                ORDER BY p.n""")
        for n, qid, iid, query, has_item, *_ in rows:
            if query is None:
                raise RelkitError(f"pair ({qid}, {iid}): the workspace has no query '{qid}'")
            if not has_item:
                raise RelkitError(f"pair ({qid}, {iid}): the workspace has no item '{iid}'")
        return [self.builder.render(r[3], dict(zip(ITEM_RECORD_COLUMNS, r[5:]))) for r in rows]

    def _table(self, rows: list[dict]):
        import pyarrow as pa

        k = self.scale.k
        probs = [r["p"] for r in rows]
        out = {"teacher": [self.name] * len(rows), "query_id": [r["pair"][0] for r in rows],
               "item_id": [r["pair"][1] for r in rows]}
        for level in range(k):
            out[f"p{level + 1}"] = pa.array([None if p is None else float(p[level]) for p in probs], pa.float32())
        out["expected_level"] = pa.array([None if p is None else float(np.dot(p, np.arange(1, k + 1)))
                                          for p in probs], pa.float32())
        out["model"] = [self.spec.model_id] * len(rows)
        out["prompt_hash"] = [self.prompt_hash] * len(rows)
        out["source"] = [r["source"] for r in rows]
        out["answer"] = [r["answer"] for r in rows]
        out["prompt_tokens"] = pa.array([r["prompt_tokens"] for r in rows], pa.int64())
        out["completion_tokens"] = pa.array([r["completion_tokens"] for r in rows], pa.int64())
        return pa.table(out)


def _int_n() -> dict:
    import pyarrow as pa

    return {"n": pa.int64()}


def _read_labels(ws: Workspace, dirs: list[Path], k: int, model_id: str, prompt_hash: str) -> dict:
    """(query_id, item_id) -> the stored label of that model and prompt, from the shards in `dirs`."""
    files = [str(f) for d in dirs for f in shards(d)]
    if not files:
        return {}
    probs = ", ".join(f"p{i}" for i in range(1, k + 1))
    rows = ws.fetchall(f"""
        SELECT query_id, item_id, {probs}, source, answer, prompt_tokens, completion_tokens
        FROM read_parquet(?, union_by_name = true) WHERE model = ? AND prompt_hash = ?""",
                       [files, model_id, prompt_hash])
    out = {}
    for r in rows:
        p = None if r[2] is None else np.array(r[2:2 + k], dtype=np.float64)
        out[(r[0], r[1])] = {"p": p, "source": r[2 + k], "answer": r[3 + k], "prompt_tokens": 0,
                             "completion_tokens": 0}   # a reused label costs nothing this time
    return out


# --- making, storing and loading judges ----------------------------------------------------------

def _pick_shots(ws: Workspace, n: int, template: ItemTextTemplate, seed: int) -> tuple[Shot, ...]:
    """`n` train judgments, the levels taken in turn (lowest first) so that each level is shown."""
    if not n:
        return ()
    cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
    rows = ws.fetchall(f"""
        SELECT j.label, q.query, {cols} FROM judgments j JOIN splits s USING (query_id)
        JOIN queries q USING (query_id) JOIN item_records i USING (item_id)
        WHERE s.split = 'train' ORDER BY j.query_id, j.item_id""")
    if not rows:
        raise RelkitError("--shots draws examples from the train split's judgments, and it has none; use --shots 0")
    rng = np.random.default_rng(seed)
    by_level: dict[int, list] = {}
    for r in rows:
        by_level.setdefault(r[0], []).append(r)
    for level in by_level:
        rng.shuffle(by_level[level])
    shots: list[Shot] = []
    while len(shots) < min(n, len(rows)):
        for level in sorted(by_level):
            if by_level[level] and len(shots) < n:
                r = by_level[level].pop()
                shots.append(Shot(r[1], template.render(dict(zip(ITEM_RECORD_COLUMNS, r[2:]))), int(r[0])))
    order = rng.permutation(len(shots))    # not sorted by level: the order would teach a pattern
    return tuple(shots[i] for i in order)


def _builder(scale: LabelScale, spec: JudgeSpec, template: str | None, guidelines: str, shots: tuple[Shot, ...],
             origin: str) -> PromptBuilder:
    item_template = ItemTextTemplate.parse(spec.fields) if spec.fields else DEFAULT_TEMPLATE
    return PromptBuilder.build(scale, item_template, template, guidelines, shots, origin)


def create_judge(ws: Workspace, spec: JudgeSpec, prompt_file: Path | None = None,
                 guidelines_file: Path | None = None) -> Judge:
    """Store a judge as artifacts/judge-NAME (relkit.json, prompt.txt, guidelines.txt, shots.json).
    A judge of that name already stored with the same settings and prompt is loaded instead; one
    with others is an error (pick another name)."""
    template = read_text_file(prompt_file, "prompt template") if prompt_file else None
    guidelines = read_text_file(guidelines_file, "guidelines") if guidelines_file else ""
    item_template = ItemTextTemplate.parse(spec.fields) if spec.fields else DEFAULT_TEMPLATE
    shots = _pick_shots(ws, spec.shots, item_template, spec.seed)
    builder = _builder(ws.scale, spec, template, guidelines, shots, str(prompt_file or "the prompt template"))
    path = judge_dir(ws, spec.name)
    if (path / "relkit.json").exists():
        existing = load_judge(ws, spec.name)
        if existing.spec != spec or existing.prompt_hash != builder.hash:
            raise RelkitError(f"a judge '{spec.name}' exists with other settings or another prompt ({path}); pick "
                              f"another --name, or run it again with `relkit judge --name {spec.name}` alone")
        return existing
    from relkit import __version__
    from relkit.judge.prompt import default_template_text

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / FILES["prompt"]).write_text(template if template is not None else default_template_text())
    (tmp / FILES["guidelines"]).write_text(guidelines)
    (tmp / FILES["shots"]).write_text(json.dumps([asdict(s) for s in shots], indent=2))
    (tmp / "relkit.json").write_text(json.dumps({
        "kind": KIND, "relkit_version": __version__, "spec": asdict(spec), "scale": json.loads(ws.scale.to_json()),
        "prompt_hash": builder.hash}, indent=2))
    tmp.rename(path)   # a judge exists whole or not at all
    return Judge(spec, ws.scale, builder, path)


def load_judge(ws: Workspace, name: str) -> Judge:
    """The judge stored by `relkit judge --name NAME` (NAME, judge:NAME or judge-NAME).

        probs = load_judge(ws, "smol").judge(ws, [("q1", "item-7")])
    """
    name = judge_name(name)
    path = judge_dir(ws, name)
    meta_file = path / "relkit.json"
    if not meta_file.is_file():
        here = sorted(p.name.removeprefix(f"{KIND}-") for p in ws.artifacts.glob(f"{KIND}-*")
                      if (p / "relkit.json").is_file())
        raise RelkitError(f"no judge '{name}' in {ws.artifacts}; judges here: {', '.join(here) or 'none'} "
                          f"(make one with `relkit judge --model M --name {name}`)")
    try:
        meta = json.loads(meta_file.read_text())
        spec = from_dict(JudgeSpec, meta["spec"], "judge option")
        scale = LabelScale(names=tuple(meta["scale"]["names"]), gains=tuple(meta["scale"]["gains"]))
        shots = tuple(Shot(**s) for s in json.loads((path / FILES["shots"]).read_text()))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise RelkitError(f"{meta_file}: not a readable judge ({e})") from None
    if scale != ws.scale:
        raise RelkitError(f"judge '{name}' was made for another label scale ({scale.describe()}) than this "
                          f"workspace's ({ws.scale.describe()})")
    template = read_text_file(path / FILES["prompt"], "prompt template")
    guidelines = read_text_file(path / FILES["guidelines"], "guidelines")
    return Judge(spec, scale, _builder(scale, spec, template, guidelines, shots, str(path / FILES["prompt"])), path)


# --- what to judge ---------------------------------------------------------------------------------

def select_pairs(ws: Workspace, split: str | None = None, file: Path | None = None) -> list[tuple[str, str]]:
    """The pairs to judge: the `pairs` table (default), the judged pairs of `split`, or a file's
    (query_id, item_id) columns."""
    if split is not None and file is not None:
        raise RelkitError("judge the pairs of --split or of --file, not both")
    if file is not None:
        from relkit.data.readers import read_records

        records = read_records(file)
        missing = [c for c in ("query_id", "item_id") if c not in records.columns]
        if missing:
            raise records.error(f"the file has no column {', '.join(missing)} (columns: {', '.join(records.columns)})")
        pairs = []
        for row, (q, i) in enumerate(zip(records.columns["query_id"], records.columns["item_id"])):
            if q is None or i is None or not str(q).strip() or not str(i).strip():
                raise records.error("a pair needs both a query_id and an item_id", row,
                                    "query_id" if q is None or not str(q).strip() else "item_id")
            pairs.append((str(q).strip(), str(i).strip()))
        return pairs
    if split is not None:
        if split not in SPLITS:
            raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        rows = ws.fetchall("SELECT j.query_id, j.item_id FROM judgments j JOIN splits s USING (query_id) "
                           "WHERE s.split = ? ORDER BY 1, 2", [split])
        if not rows:
            raise RelkitError(f"the {split} split has no judged pairs to judge")
        return [tuple(r) for r in rows]
    rows = ws.fetchall("SELECT query_id, item_id FROM pairs ORDER BY 1, 2")
    if not rows:
        raise RelkitError("the pairs table is empty: make candidates with `relkit pairs`, import some with "
                          "`relkit import pairs FILE`, or judge --split or --file")
    return [tuple(r) for r in rows]
