"""Ingestion: discover files, load them into sections, chunk, embed and store."""
