"""The catalog's features for the service, read from the workspace in a process of its own.

A student's features (item vectors, the BM25 index, the text-match terms, engagement rates) and
the known queries that warm the query cache are read from the workspace database. Reading it loads
DuckDB, whose library pages then stay mapped in the reading process for good (some 40-50 MB of its
resident memory, more than the features of a catalog of thousands of items). So the service reads
them in a short-lived child process (`in_child`) that hands them back pickled through a temporary
file and exits: the serving process never imports DuckDB (nor pyarrow). An error in the child (a
workspace another process is writing, a missing table) is raised in the service as the child
raised it.

    builder, queries = read_features(workspace, config, "student-a", known=2000)
"""
from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from relkit.errors import RelkitError
from relkit.text import BLANK

if TYPE_CHECKING:
    from relkit.student.features import FeatureBuilder, FeatureConfig

logger = logging.getLogger(__name__)
CHILD = "import sys; from relkit.student.snapshot import main; sys.exit(main(*sys.argv[1:3]))"


class WorkspaceBusy(RelkitError):
    """The workspace cannot be read now (DuckDB refuses while another connection writes it)."""


def build(workspace: Path, config: FeatureConfig, student: str, known: int) -> tuple[FeatureBuilder, list[str]]:
    """The feature builder of `student`'s `config` over the workspace's catalog (without its query
    encoder: the service loads its own) and up to `known` of the workspace's known queries. What the
    child process runs; it reads the workspace (DuckDB)."""
    from relkit.features.onnx_encoder import OnnxEncoder, encoder_folder, has_export
    from relkit.student.features import FeatureBuilder
    from relkit.workspace import Workspace

    encoder = None
    if "embedding" in config.groups:   # item texts not in the vector cache are encoded with the ONNX export
        folder = encoder_folder(Path(workspace) / "artifacts", config.encoder)
        encoder = OnnxEncoder(folder) if has_export(folder) else None   # None: torch, as the service says
    try:
        ws = Workspace.open(workspace, read_only=True)
    except RelkitError:
        raise
    except Exception as e:  # DuckDB refuses while another process writes the workspace
        raise WorkspaceBusy(f"cannot read the workspace {workspace} (is a relkit command writing it?): {e}") from e
    with ws:
        builder = FeatureBuilder.from_workspace(ws, config, encoder=encoder)
        queries = _known(ws, known)
    builder._encoder = None      # the service's own encoder is set when it loads the builder
    return builder, queries


def known_queries(workspace: Path, limit: int) -> list[str]:
    """Up to `limit` of the workspace's queries, the likeliest to be asked first: those of the
    engagement log by impressions, then the other known queries (judged, or with candidate pairs)
    by how many items they are paired with."""
    from relkit.workspace import Workspace

    if limit <= 0:
        return []
    with Workspace.open(workspace, read_only=True) as ws:
        return _known(ws, limit)


def _known(ws, limit: int) -> list[str]:
    """`known_queries` of an open workspace."""
    if limit <= 0:
        return []
    rows = ws.fetchall("""
            WITH logged AS (SELECT query, sum(impressions) AS impressions FROM engagement GROUP BY 1),
                 paired AS (SELECT query_id, count(*) AS n FROM
                              (SELECT query_id FROM judgments UNION ALL SELECT query_id FROM pairs)
                            GROUP BY query_id),
                 known AS (SELECT q.query, sum(coalesce(p.n, 0)) AS n
                           FROM queries q LEFT JOIN paired p USING (query_id) GROUP BY 1)
            SELECT coalesce(l.query, k.query) AS query
            FROM logged l FULL OUTER JOIN known k ON l.query = k.query
            ORDER BY coalesce(l.impressions, 0) DESC, coalesce(k.n, 0) DESC, query""")
    # as a request's query is keyed: without the blanks around it
    queries = dict.fromkeys(q.strip(BLANK) for (q,) in rows)
    queries.pop("", None)
    return list(queries)[:limit]


def check_workspace(workspace: Path, child: bool = True) -> None:
    """Raise the error opening `workspace` gives (none there, another relkit's schema), found in a
    child process (`child`) or in this one."""
    from relkit.workspace import Workspace

    if child:
        return in_child("check_workspace", f"opening the workspace {workspace}", Path(workspace), False)
    Workspace.open(workspace, read_only=True).close()


def read_features(workspace: Path, config: FeatureConfig, student: str,
                  known: int = 0) -> tuple[FeatureBuilder, list[str]]:
    """`build` run in a child process: the builder and the known queries, DuckDB never loaded here."""
    return in_child("build", f"reading the features of {student} from {workspace}", Path(workspace), config, student,
                    known)


def in_child(function: str, what: str, *args):
    """This module's `function(*args)` run in a child process (the same Python): its result, or its
    error raised here. `what` names the work in the error of a child that died without answering."""
    with tempfile.TemporaryDirectory(prefix="relkit-child-") as tmp:
        request, answer = Path(tmp) / "request.pickle", Path(tmp) / "answer.pickle"
        request.write_bytes(pickle.dumps((function, what, args, logging.getLogger("relkit").getEffectiveLevel())))
        done = subprocess.run([sys.executable, "-c", CHILD, str(request), str(answer)],
                              stdin=subprocess.DEVNULL, check=False)
        if not answer.exists():
            raise RelkitError(f"{what} failed: its process exited with status {done.returncode} (its log is above)")
        with answer.open("rb") as f:
            outcome = pickle.load(f)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def main(request: str, answer: str) -> int:
    """The child's side of `in_child`: run the function the request names, pickle its outcome."""
    function, what, args, level = pickle.loads(Path(request).read_bytes())
    logging.basicConfig(level=level, format="%(message)s")
    try:
        outcome = {"build": build, "check_workspace": check_workspace}[function](*args)
    except RelkitError as e:
        outcome = e
    except Exception as e:  # said in the service as an error of its own kind, with the trace in the log
        traceback.print_exc()
        outcome = RelkitError(f"{what} failed: {type(e).__name__}: {e}")
    if isinstance(outcome, RelkitError):
        try:                      # an error the service can rebuild, or its message
            pickle.loads(pickle.dumps(outcome))
        except Exception:
            outcome = RelkitError(str(outcome))
    tmp = Path(answer + ".part")
    with tmp.open("wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.rename(answer)            # whole or not at all
    return 0

