"""The ONNX embedder: the published sanity figures, normalisation, batching, model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.backends.local import embedder as embedder_module
from rag.backends.local.embedder import (
    DEFAULT_MODEL_ID,
    DEFAULT_MODEL_SHA256,
    OnnxEmbedder,
    default_model_path,
    file_sha256,
    verify_sha256,
)
from rag.backends.local.tokenizer import sha256_file
from rag.config import LocalSettings
from rag.errors import ModelUnavailable

WEATHER = "The weather is lovely today."
SUNNY = "It's so sunny outside!"
STADIUM = "He drove to the stadium."


@pytest.fixture(scope="module")
def model() -> OnnxEmbedder:
    return OnnxEmbedder.from_settings(LocalSettings())


@pytest.mark.model
async def test_sanity_reference(model: OnnxEmbedder) -> None:
    # local-models.md: the int8 model gives 0.668 and 0.106 (fp32: 0.6660 and 0.1046).
    vectors = await model.embed([WEATHER, SUNNY, STADIUM], "passage")
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.668, abs=0.01)
    assert float(vectors[0] @ vectors[2]) == pytest.approx(0.106, abs=0.01)


@pytest.mark.model
async def test_unit_norms_and_identity(model: OnnxEmbedder) -> None:
    assert model.model_id == DEFAULT_MODEL_ID
    assert model.dimension == 384
    vectors = await model.embed(["", "a", WEATHER * 40, "x " * 600], "query")
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (await model.embed([], "query")).shape == (0, 384)


@pytest.mark.model
def test_batch_equals_single(model: OnnxEmbedder) -> None:
    texts = [STADIUM, WEATHER * 12, "short", SUNNY, "a somewhat longer sentence " * 9, "x"]
    model.batch_size = 4  # two batches, padded differently from the single runs
    batched = model.embed_sync(texts)
    singles = np.vstack([model.embed_sync([t]) for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.model
def test_cls_pooling_differs_but_is_normalised() -> None:
    cls = OnnxEmbedder(default_model_path(), sha256=DEFAULT_MODEL_SHA256, pooling="cls")
    mean = OnnxEmbedder()
    a, b = cls.embed_sync([WEATHER])[0], mean.embed_sync([WEATHER])[0]
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-5)
    assert float(a @ b) < 0.999
    # A model given by path and no id is named after its file and content.
    assert cls.model_id == f"model-{DEFAULT_MODEL_SHA256[:8]}"


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(ModelUnavailable, match="sha256"):
        OnnxEmbedder(fake, sha256="0" * 64)
    with pytest.raises(ModelUnavailable, match="sha256"):
        verify_sha256(fake, DEFAULT_MODEL_SHA256)


def test_missing_and_unloadable_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        OnnxEmbedder(tmp_path / "absent.onnx")
    with pytest.raises(ModelUnavailable, match="not found"):
        OnnxEmbedder.from_settings(LocalSettings(model_path=str(tmp_path)))  # no model.onnx
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelUnavailable, match="not a loadable ONNX model"):
        OnnxEmbedder(junk, sha256=file_sha256(junk))


def test_digest_is_cached_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def counting(path: Path) -> str:
        calls.append(path)
        return sha256_file(path)

    monkeypatch.setattr(embedder_module, "sha256_file", counting)
    target = tmp_path / "weights.bin"
    target.write_bytes(b"one")
    first = file_sha256(target)
    assert file_sha256(target) == first
    assert len(calls) == 1
    target.write_bytes(b"two, longer")  # a new size: hashed again
    assert file_sha256(target) != first
    assert len(calls) == 2
