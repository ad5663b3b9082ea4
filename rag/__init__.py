"""rag: cited, streamed answers over an organisation's own documents."""

__version__ = "0.1.0"
