"""The embedded default: local ONNX embedder, numpy index, FTS5 keyword search, extractive answers."""
