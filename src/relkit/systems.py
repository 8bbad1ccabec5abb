"""Systems by name: `bm25`, `embedding[:MODEL]` (the workspace's encoder without MODEL), `teacher:NAME`,
`student:NAME`, `judge:NAME`. One registry; each entry builds a System."""
from __future__ import annotations

from collections.abc import Callable

from relkit.errors import RelkitError
from relkit.evaluate import System
from relkit.workspace import Workspace


def _bm25(ws: Workspace, arg: str | None) -> System:
    from relkit.baselines import BM25System

    if arg:
        raise RelkitError("bm25 takes no argument")
    return BM25System(ws)


def _embedding(ws: Workspace, arg: str | None) -> System:
    from relkit.baselines import EmbeddingSystem

    return EmbeddingSystem(arg or None, name=f"embedding:{arg}" if arg else "embedding", ws=ws)


def _teacher(ws: Workspace, arg: str | None) -> System:
    from relkit.teacher.system import TeacherSystem

    if not arg:
        raise RelkitError("name the teacher: teacher:NAME (a folder artifacts/teacher-NAME) or teacher:PATH")
    return TeacherSystem.from_workspace(ws, arg)


def _student(ws: Workspace, arg: str | None) -> System:
    from relkit.student.system import StudentSystem

    if not arg:
        raise RelkitError("name the student: student:NAME (a folder artifacts/student-NAME) or student:PATH")
    return StudentSystem.from_workspace(ws, arg)


def _judge(ws: Workspace, arg: str | None) -> System:
    from relkit.judge.system import JudgeSystem

    if not arg:
        raise RelkitError("name the judge: judge:NAME (made with `relkit judge --name NAME`)")
    return JudgeSystem(ws, arg)


SYSTEMS: dict[str, Callable[[Workspace, str | None], System]] = {
    "bm25": _bm25,
    "embedding": _embedding,
    "teacher": _teacher,
    "student": _student,
    "judge": _judge,
}


def make_system(spec: str, ws: Workspace) -> System:
    """Build a system from `NAME` or `NAME:ARG` (e.g. `embedding:/path/to/model`).

        make_system("bm25", ws).name      # 'bm25'
        make_system("teacher:demo", ws)   # artifacts/teacher-demo
    """
    name, _, arg = spec.partition(":")
    if name not in SYSTEMS:
        raise RelkitError(f"unknown system '{name}'; expected one of {', '.join(SYSTEMS)} (NAME or NAME:ARG)")
    return SYSTEMS[name](ws, arg or None)
