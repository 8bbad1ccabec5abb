"""Which item text fields pay: train a teacher with fields added one at a time and compare them
on one split, as Pinterest's ablation table does (title; + description; + caption; ...)."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from relkit.errors import RelkitError
from relkit.evaluate import evaluate
from relkit.teacher.system import TeacherSystem
from relkit.teacher.train import TrainConfig, train_teacher
from relkit.text import FIELDS
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AblationRow:
    fields: tuple[str, ...]
    teacher: str
    metrics: dict
    minutes: float


def fields_with_data(ws: Workspace, fields: Sequence[str]) -> list[str]:
    """The fields that some item judged in the train split has (non-empty)."""
    present = []
    for name in fields:
        if name not in FIELDS:
            raise RelkitError(f"unknown item text field '{name}'; the fields are {', '.join(FIELDS)}")
        value = f"i.{name}" if name != "board_titles" else "array_to_string(i.board_titles, ' ')"
        n = ws.fetchone(f"""
            SELECT count(*) FROM judgments j JOIN splits s USING (query_id) JOIN item_records i USING (item_id)
            WHERE s.split = 'train' AND trim(coalesce({value}, '')) <> ''""")[0]
        if n:
            present.append(name)
    return present


def ablate(ws: Workspace, config: TrainConfig, fields: Sequence[str] = tuple(FIELDS), split: str = "test",
           prefix: str = "ablate") -> list[AblationRow]:
    """One teacher per prefix of `fields` (only fields the data has), each trained with `config`
    and its item text cut to those fields (each field's default word budget), scored on `split`; the
    rows are kept as results/ablation-PREFIX.json for `relkit report`."""
    used = fields_with_data(ws, fields)
    if not used:
        raise RelkitError(f"no item judged in the train split has any of the fields {', '.join(fields)}")
    skipped = [f for f in fields if f not in used]
    if skipped:
        logger.info("no data for %s: left out of the ablation", ", ".join(skipped))
    rows = []
    for n in range(1, len(used) + 1):
        spec = ",".join(used[:n])
        name = f"{prefix}-{n}-{used[n - 1]}"
        logger.info("[%d/%d] fields %s: training teacher-%s", n, len(used), spec, name)
        started = time.perf_counter()
        result = train_teacher(ws, replace(config, name=name, fields=spec))
        report = evaluate(ws, [TeacherSystem(result.path, name=f"teacher:{name}")], split)
        rows.append(AblationRow(fields=tuple(used[:n]), teacher=name, metrics=report.results[0].metrics,
                                minutes=(time.perf_counter() - started) / 60))
    ws.save_result("ablation", prefix, {"split": split, "rows": rows_as_dicts(rows)})
    return rows


def ablation_table(rows: list[AblationRow], metrics: Sequence[str]):
    """Metrics as rows, one column per field set (title, + description, ...), like `relkit eval`."""
    from rich.table import Table

    table = Table(title="item text ablation")
    table.add_column("metric", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_column(row.fields[0] if i == 0 else f"+ {row.fields[-1]}", justify="right", no_wrap=True)
    for m in metrics:
        values = [row.metrics.get(m) for row in rows]
        table.add_row(m, *("-" if v is None else f"{v:.4f}" for v in values))
    table.add_row("minutes", *(f"{row.minutes:.1f}" for row in rows))
    return table


def rows_as_dicts(rows: list[AblationRow]) -> list[dict]:
    return [asdict(r) for r in rows]
