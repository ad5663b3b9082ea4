"""Answering: sentence splitting, the answer stream, citations."""
