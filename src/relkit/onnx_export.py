"""torch modules to ONNX with the exporter current for torch 2.x (`torch.onnx.export(dynamo=True)`):
one helper for the teacher (`relkit.teacher.export`) and the query encoder
(`relkit.features.onnx_encoder`), both models of `(input_ids, attention_mask)` with the batch and
the length dynamic; and the ONNX Runtime session both run in. torch is imported only by the
exporting functions, never by the service."""
from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path


def export_program(model, input_ids, attention_mask, output: str):
    """torch.export's ONNX program of `model(input_ids, attention_mask) -> output`, batch and length
    dynamic. Give inputs of two rows of different lengths: torch.export fixes a dimension seen with size 1."""
    import torch
    from torch.export import Dim

    batch, tokens = Dim("batch"), Dim("tokens")   # the same two for both inputs: their shapes are equal
    shapes = {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)   # a line per torchvision operator it skips, when torchvision is absent
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # torch's own pytree code, deep-copying its tree specs, warns of its own deprecated class; and
            # the exporter says that a name given twice (as the two inputs share theirs) is used once
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            return torch.onnx.export(model.eval(), (input_ids, attention_mask),
                                     input_names=["input_ids", "attention_mask"], output_names=[output],
                                     dynamic_shapes=shapes, dynamo=True, verbose=False)
    finally:
        exporter_log.setLevel(level)


def save_program(program, file: Path) -> Path:
    """Save an ONNX program as `file`, written aside and then moved in (a model over 2 GB keeps its
    weights in a second file): an interrupted export leaves no `file` behind."""
    folder = file.parent
    tmp = folder / "export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    program.save(tmp / file.name)
    for part in sorted(tmp.iterdir(), key=lambda f: f.name == file.name):   # the model file last
        part.rename(folder / part.name)
    tmp.rmdir()
    return file


def cpu_session(file: Path, threads: int | None = None):
    """An ONNX Runtime session of `file` on the CPU, fully optimised, its threads not busy-waiting
    between runs (they would spin on the cores the Python side and the event loop need)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
