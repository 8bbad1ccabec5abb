"""Distillation: students trained on the teacher's soft labels (the label shards of `relkit
label`) of train-split pairs, optionally mixed with the train split's human labels, early-stopped
on the dev split's human labels and scored on the test split's. The labels are read in chunks and
kept on disk as training rows that batches are assembled from (`relkit.student.stream`): memory
does not grow with the number of teacher-labeled pairs.

`scaling_curve` trains one student per number of teacher-labeled pairs (nested random subsets of
the same order) next to one trained on human labels alone: how much the teacher's labels add as
they grow.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.evaluate import Prediction, score_prediction
from relkit.labels import JUDGE_PREFIX, JudgedPairs, LabeledPairs, judge_name, judged_split, load_judged_pairs
from relkit.student.fast import measure_speed
from relkit.student.features import FeatureBuilder, FeatureConfig
from relkit.student.model import DevSet, Student, StudentConfig, assemble, fit_student
from relkit.student.stream import SHUFFLE_ROWS, StudentRows, TrainingStream
from relkit.student.stream import sharpen  # noqa: F401 (importable from here, as before)
from relkit.workspace import Workspace

HUMAN_ONLY = "human"


def human_labels(judged: JudgedPairs, k: int) -> LabeledPairs:
    targets = np.zeros((len(judged), k), dtype=np.float32)
    targets[np.arange(len(judged)), judged.labels - 1] = 1.0
    return LabeledPairs(judged.query_ids, judged.queries, judged.item_ids, targets)


def inputs(builder: FeatureBuilder, queries: list[str], item_ids: list[str]) -> np.ndarray:
    features = builder.pairs(queries, item_ids)
    return assemble(features, builder.items.vectors, builder.items.extra)


def student_prediction(student: Student, builder: FeatureBuilder, judged: JudgedPairs) -> Prediction:
    proba = student.predict_proba(builder.pairs(judged.queries, judged.item_ids), builder)
    return Prediction(proba=proba, levels=student.predict_levels(proba))


@dataclass
class CurveRow:
    name: str
    teacher_pairs: int
    human_pairs: int
    metrics: dict           # test metrics
    dev: dict               # dev metrics of the kept epoch
    seconds: float


@dataclass(frozen=True)
class ScalingCurve:
    """The students of `scaling_curve`, in order (iterate over it for the rows); rich renders it as
    a table."""

    rows: tuple[CurveRow, ...]
    k: int                  # levels of the workspace's scale

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def __rich__(self):
        from rich.table import Table

        table = Table(title=f"students on the test split ({self.k} levels)")
        for col in ("trained on", "teacher pairs", "human pairs", "accuracy", "qwk", "ndcg@10", "dev ndcg@10",
                    "seconds"):
            table.add_column(col, justify="left" if col == "trained on" else "right")
        for r in self.rows:
            table.add_row("human labels only" if r.name == HUMAN_ONLY else f"teacher {r.name}",
                          f"{r.teacher_pairs:,}", f"{r.human_pairs:,}", f"{r.metrics['accuracy']:.4f}",
                          f"{r.metrics['qwk']:.4f}", f"{r.metrics['ndcg@10']:.4f}", f"{r.dev['ndcg@10']:.4f}",
                          f"{r.seconds:.1f}")
        return table


class Distiller:
    """Holds what several students can be trained on: the teacher's labels of train pairs and
    people's, as training rows on disk (`relkit.student.stream`: each pair's query and item rows and
    pair scalars, read back in batches, so memory does not grow with the labels), and the dev and
    test pairs' features. `shuffle_rows`: a training set this small is shuffled whole, a larger one
    by windows of this many rows."""

    def __init__(self, ws: Workspace, teacher: str | None, features: FeatureConfig | None = None,
                 shuffle_rows: int = SHUFFLE_ROWS):
        if teacher and teacher.startswith(JUDGE_PREFIX):
            teacher = JUDGE_PREFIX + judge_name(teacher)   # a judge's labels
        elif teacher:  # labels are kept under the teacher's name: `demo`, `teacher-demo` and a path name the same
            try:
                teacher = Workspace.artifact_name("teacher", ws.artifact("teacher", teacher))
            except RelkitError:   # a teacher whose folder is gone may still have labels
                teacher = Workspace.artifact_name("teacher", Path(teacher))
        self.ws, self.teacher = ws, teacher
        self.builder = FeatureBuilder.from_workspace(ws, features)
        k = ws.scale.k
        judged = {split: _has_judgments(ws, split) for split in ("train", "dev", "test")}
        stand_in = teacher if teacher and teacher.startswith(JUDGE_PREFIX) else _judge_behind(ws, teacher)
        if stand_in:
            # with no human label on a split, the judge's labels stand in (the judge itself, or the one
            # whose labels the teacher learned from): zero human labels is a start
            for split in ("dev", "test"):
                if not judged[split]:
                    setattr(self, f"{split}_pairs", judged_split(ws, stand_in, split)[0])
        self.human = human_labels(load_judged_pairs(ws, "train"), k) if judged["train"] or not teacher else None
        if judged["dev"] or not hasattr(self, "dev_pairs"):
            self.dev_pairs = load_judged_pairs(ws, "dev")
        if judged["test"] or not hasattr(self, "test_pairs"):
            self.test_pairs = load_judged_pairs(ws, "test")
        self.dev = DevSet(inputs(self.builder, self.dev_pairs.queries, self.dev_pairs.item_ids),
                          self.dev_pairs.labels, self.dev_pairs.query_ids, self.dev_pairs.item_ids)
        self.rows = StudentRows.from_workspace(ws, self.builder, teacher, self.human, directory=ws.path)
        self.shuffle_rows = shuffle_rows

    @property
    def available(self) -> int:
        """Teacher-labeled train pairs."""
        return self.rows.teacher_rows

    @property
    def human_pairs(self) -> int:
        """Human-labeled train pairs."""
        return self.rows.human_rows

    @property
    def teacher_queries(self) -> int:
        """Distinct queries of the teacher-labeled train pairs."""
        return self.rows.teacher_queries

    def close(self) -> None:
        """Remove the training rows from disk now (they also go with the object)."""
        self.rows.close()

    def train(self, n_teacher: int | None, config: StudentConfig, human: bool = True) -> Student:
        """A student on the first `n_teacher` teacher-labeled pairs of a fixed random order (all when
        None), plus the human train labels when `human` (weighted by config.human_weight)."""
        n_teacher = self.available if n_teacher is None else n_teacher
        if n_teacher > self.available:
            raise RelkitError(f"asked for {n_teacher:,} teacher-labeled pairs; there are {self.available:,}")
        n_human = self.human_pairs if human and config.human_weight > 0 else 0
        if not n_teacher and not n_human:
            raise RelkitError("nothing to train the student on: no teacher-labeled pairs and no human labels")
        # the rows in the order an in-memory set had them: a random order of the teacher's (its first
        # n_teacher when fewer), then people's; the teacher's rows come first in the file
        order = np.random.default_rng(config.seed).permutation(self.available)[:n_teacher]
        train = TrainingStream(self.rows, np.concatenate([order, np.arange(self.available, self.available + n_human)]),
                               config.human_weight, config.label_temperature, self.shuffle_rows)
        del order   # the permutation, 8 bytes a pair, is not kept while training
        data = {"teacher_pairs": int(n_teacher), "human_pairs": int(n_human),
                # queries count as much as pairs: a student learns the teacher from many queries
                "teacher_queries": train.stats.teacher_queries if n_teacher else 0,
                "human_queries": len(set(self.human.queries)) if n_human else 0}
        student = fit_student(train, self.dev, self.ws.scale, self.builder, config, teacher=self.teacher, data=data)
        # the model card's figures: held-out test metrics and the fast scorer's time per query
        student.meta.metrics["test"] = self.test(student)
        queries = list(dict.fromkeys(self.test_pairs.queries))[:20]
        student.meta.data["speed"] = measure_speed(student, self.builder, queries)
        return student

    def test(self, student: Student) -> dict:
        return score_prediction(self.test_pairs, student_prediction(student, self.builder, self.test_pairs),
                                self.ws.scale)


def _has_judgments(ws: Workspace, split: str) -> bool:
    return bool(ws.fetchone("SELECT count(*) FROM judgments JOIN splits USING (query_id) WHERE split = ?", [split])[0])


def _judge_behind(ws: Workspace, teacher: str | None) -> str | None:
    """`judge:NAME` when `teacher` was trained on that judge's labels (`relkit teach --labels`), else None."""
    if not teacher or teacher.startswith(JUDGE_PREFIX):
        return None
    try:
        meta = json.loads((ws.artifact("teacher", teacher) / "relkit.json").read_text())
    except (RelkitError, OSError, ValueError):
        return None
    labels = (meta.get("config") or {}).get("labels", "human")
    return labels if isinstance(labels, str) and labels.startswith(JUDGE_PREFIX) else None


def parse_sizes(spec: str) -> list[int | None]:
    """"1000,5000,all" -> [1000, 5000, None]."""
    out: list[int | None] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise RelkitError(f"--sizes: '{part}' is not a positive number of pairs or 'all'")
    if not out:
        raise RelkitError("--sizes needs at least one size")
    return out


def scaling_curve(distiller: Distiller, sizes: list[int | None], config: StudentConfig, prefix: str,
                  save: bool = True) -> ScalingCurve:
    """One student on human labels only, then one per size; each scored on the test split and
    saved as artifacts/student-PREFIX-human, student-PREFIX-N, the curve as results/scaling-PREFIX.json."""
    rows = []
    plan = [(HUMAN_ONLY, 0)] + [(str(n or distiller.available), n) for n in sizes]
    for label, n in plan:
        if label == HUMAN_ONLY:
            student = distiller.train(0, replace(config, human_weight=max(config.human_weight, 1e-9)), human=True)
        else:
            student = distiller.train(n, config)
        if save:
            student.save(distiller.ws.artifacts / f"student-{prefix}-{label}")
        rows.append(CurveRow(label, student.meta.data["teacher_pairs"], student.meta.data["human_pairs"],
                             student.meta.metrics["test"], student.meta.metrics["dev"], student.meta.data["seconds"]))
    if save:
        distiller.ws.save_result("scaling", prefix, {"teacher": distiller.teacher, "split": "test",
                                                     "rows": [asdict(r) for r in rows]})
    return ScalingCurve(tuple(rows), distiller.ws.scale.k)
