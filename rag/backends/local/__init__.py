"""The embedded default: ONNX embedder, numpy index, FTS5 keywords, extractive answers."""
