"""A teacher on ONNX Runtime: export once (fp32, optionally dynamic int8), then score pairs
without torch in the loop. The export lives in the teacher's folder (`onnx/`) and is reused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from relkit.errors import RelkitError
from relkit.onnx_export import cpu_session, export_program, save_program

ONNX_DIR = "onnx"


class LogitsOnly(torch.nn.Module):
    """The model's logits alone (a decoder without its key-value cache), as the exporter wants."""

    def __init__(self, model, decoder: bool):
        super().__init__()
        self.model, self.extra = model, ({"use_cache": False} if decoder else {})

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **self.extra).logits


def export_onnx(teacher, int8: bool = False) -> Path:
    """The teacher's ONNX file (exported on first use); with `int8`, its dynamically quantized copy."""
    folder = teacher.path / ONNX_DIR
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        if teacher.meta.family == "encoder-decoder":
            raise RelkitError("ONNX export covers encoder and decoder teachers; use the torch backend for T5")
        from relkit.teacher.fast import FirstTokenClassifier

        model = teacher.model.eval()
        model = (FirstTokenClassifier(model) if FirstTokenClassifier.supports(model)
                 else LogitsOnly(model, decoder=teacher.meta.family == "decoder")).eval()
        # two pairs of different lengths: torch.export fixes a dimension seen with size 1
        ids = teacher.tokenizer(["red chair", "blue oak table lamp"], ["a red oak chair", "lamp"], padding=True,
                                return_tensors="pt", return_token_type_ids=False)
        save_program(_export(model, ids["input_ids"], ids["attention_mask"]), fp32)
    if not int8:
        return fp32
    quantized = folder / "model-int8.onnx"
    if not quantized.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / "model-int8.onnx.tmp"
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        tmp.rename(quantized)
    return quantized


def _export(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """torch.export's ONNX program of `model(input_ids, attention_mask) -> logits`, batch and length dynamic."""
    return export_program(model, input_ids, attention_mask, output="logits")


class OnnxScorer:
    """Softmax over a teacher's ONNX logits for encoded pairs; the same batching as the torch path."""

    def __init__(self, teacher, int8: bool = False, threads: int | None = None):
        self.path = export_onnx(teacher, int8)
        self.session = cpu_session(self.path, threads)
        self.pad = teacher.tokenizer.pad_token_id or 0
        self.k = teacher.scale.k

    def __call__(self, ids: list[list[int]], batch_size: int = 32, offsets: np.ndarray | None = None) -> np.ndarray:
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.zeros((len(ids), self.k), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = np.full((len(chunk), width), self.pad, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                input_ids[row, :len(ids[i])] = ids[i]
                mask[row, :len(ids[i])] = 1
            logits = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
            if offsets is not None:
                logits = logits + offsets[chunk]
            logits = logits - logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            out[chunk] = e / e.sum(axis=1, keepdims=True)
        return out
