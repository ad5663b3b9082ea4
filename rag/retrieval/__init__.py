"""Retrieval: dense and keyword candidates, rank fusion, reranking and the evidence gate."""
