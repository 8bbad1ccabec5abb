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


def compact_embeddings(file: Path, min_rows: int = 1000) -> int:
    """Store the token embedding tables of the ONNX model `file` as int16 with one float32 scale per
    row, in place (half their memory); returns how many tables were stored so. A table is a 2-D
    float32 initializer read only by `Gather`s of the `input_ids` input: each text reads a few of
    its rows, so its size matters only for memory, where it is half of a small encoder (MiniLM-L6:
    11.7M of 22.7M weights; a multilingual vocabulary's more). int16 by row leaves the vectors as
    float32's (cosine to torch's within 1.2e-7 on 500 Home Depot queries, as before); int8 by row
    would move them by up to 1e-4, and inline items would no longer score as their catalog twins.
    The exports check their agreement with torch after this. A model over 2 GB (weights in a file
    of their own) is left as it is."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(file), load_external_data=False)
    if any(uses_external_data(t) for t in model.graph.initializer):
        return 0
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    ids = model.graph.input[0].name
    tables = [t for t in model.graph.initializer
              if t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and t.dims[0] >= min_rows and t.dims[1] > 1
              and t.name in readers and all(n.op_type == "Gather" and list(n.input) == [t.name, ids]
                                            and all(a.name != "axis" or a.i == 0 for a in n.attribute)
                                            for n in readers[t.name])]
    replaced: dict[int, list] = {}
    for table in tables:
        weights = numpy_helper.to_array(table)
        scale = np.abs(weights).max(axis=1, keepdims=True) / 32767
        scale[scale == 0] = 1
        q = np.clip(np.rint(weights / scale), -32767, 32767).astype(np.int16)
        model.graph.initializer.remove(table)
        model.graph.initializer.extend([numpy_helper.from_array(q, f"{table.name}.int16"),
                                        numpy_helper.from_array(scale.astype(np.float32), f"{table.name}.scale")])
        for node in readers[table.name]:
            out = node.output[0]   # rows of int16 -> float, times their rows' scales: the float rows
            replaced[id(node)] = [
                helper.make_node("Gather", [f"{table.name}.int16", ids], [f"{out}.int16"], axis=0),
                helper.make_node("Cast", [f"{out}.int16"], [f"{out}.cast"], to=TensorProto.FLOAT),
                helper.make_node("Gather", [f"{table.name}.scale", ids], [f"{out}.scale"], axis=0),
                helper.make_node("Mul", [f"{out}.cast", f"{out}.scale"], [out])]
    if not tables:
        return 0
    nodes = [new for node in model.graph.node for new in replaced.get(id(node), [node])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    tmp = file.with_name(file.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(file)
    return len(tables)


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
