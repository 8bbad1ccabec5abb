"""Hugging Face housekeeping shared by every model relkit loads."""
from __future__ import annotations


def quiet() -> None:
    """Drop transformers' per-tensor load bars and load reports: relkit says what it loads, and a
    fresh classification head is expected, not news."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
