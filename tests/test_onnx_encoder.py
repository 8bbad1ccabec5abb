"""The bi-encoder's ONNX export: its vectors agree with the torch encoder's, for the default encoder
on real queries and for any encoder folder (a tiny BERT, with and without an e5-style prompt)."""
import csv
import json

import numpy as np
import pytest

from conftest import ROOT
from relkit import RelkitError
from relkit.features.embeddings import DEFAULT_ENCODER, Encoder
from relkit.features.onnx_encoder import OnnxEncoder, encoder_folder, export_encoder, has_export
from tiny_models import build


def sample_queries(n: int) -> list[str]:
    with open(ROOT / "data" / "sample" / "homedepot-sample.csv", newline="") as f:
        return list(dict.fromkeys(row["search_term"] for row in csv.DictReader(f)))[:n]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_default_encoder_agrees_with_torch_on_real_queries(tmp_path):
    torch_encoder = Encoder(DEFAULT_ENCODER)
    folder = export_encoder(DEFAULT_ENCODER, tmp_path, torch_encoder)
    assert folder == encoder_folder(tmp_path, DEFAULT_ENCODER) and has_export(folder)
    assert json.loads((folder / "encoder.json").read_text())["max_tokens"] == torch_encoder.model.max_seq_length
    onnx = OnnxEncoder(folder, batch_size=16)
    queries = sample_queries(300) + ["  padded with blanks  ", "x " * 400]   # blanks stripped, the long one cut
    ours, theirs = onnx.encode(queries), torch_encoder.encode(queries)
    assert ours.shape == theirs.shape == (len(queries), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosines(ours, theirs).min() >= 0.999
    # one text alone and inside a batch of others (padded): the same vector
    np.testing.assert_allclose(onnx.encode([queries[0]])[0], ours[0], atol=1e-5)
    assert export_encoder(DEFAULT_ENCODER, tmp_path) == folder            # made once, then reused


def sentence_transformer(path, prompt: str | None):
    """A sentence-transformers folder over the tiny BERT at `path`: mean pooling, and with `prompt`,
    that prompt as the one `encode` puts before every text."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    if prompt is not None:
        model.prompts, model.default_prompt_name = {"query": prompt}, "query"
    out = path.parent / f"{path.name}-st{'-prompt' if prompt else ''}"
    model.save(str(out))
    return out


@pytest.mark.parametrize("prompt", [None, "query: "])
def test_any_encoder_folder_exports_prompt_included(tmp_path, prompt):
    bert = build("bert", tmp_path / "models")
    folder = sentence_transformer(bert, prompt)
    torch_encoder = Encoder(str(folder))
    export = export_encoder(str(folder), tmp_path / "artifacts", torch_encoder)
    onnx = OnnxEncoder(export)
    assert onnx.meta.prompt == (prompt or "") and onnx.meta.dim == 32
    texts = ["red chair", "oak table lamp", "garden hose reel", "blue door lock"]
    assert cosines(onnx.encode(texts), torch_encoder.encode(texts)).min() >= 0.999
    # the prompt is in the model's input: [CLS] query : red chair [SEP]
    ids = onnx.tokenizer.encode(onnx.meta.prompt + "red chair").tokens
    assert ids == (["[CLS]", "query", ":", "red", "chair", "[SEP]"] if prompt else ["[CLS]", "red", "chair", "[SEP]"])


def test_a_plain_transformers_folder_exports_with_mean_pooling(tmp_path):
    """A folder without sentence-transformers' files: the torch encoder mean-pools it, and so does the export."""
    bert = build("bert", tmp_path)
    torch_encoder = Encoder(str(bert))
    onnx = OnnxEncoder(export_encoder(str(bert), tmp_path / "artifacts", torch_encoder))
    texts = ["red chair", "steel saw blade", "led light bulb"]
    assert cosines(onnx.encode(texts), torch_encoder.encode(texts)).min() >= 0.999


def test_a_folder_without_an_export_is_refused_with_the_fix(tmp_path):
    with pytest.raises(RelkitError, match="relkit promote"):
        OnnxEncoder(encoder_folder(tmp_path, DEFAULT_ENCODER))
