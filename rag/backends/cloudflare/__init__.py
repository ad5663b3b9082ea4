"""The production backend: Workers AI (embed, rerank, chat) and Vectorize over REST.

``client`` holds the one HTTP client; ``workers_ai`` the model adapters; ``neurons`` the
cost arithmetic; ``vectorize`` the serving index.
"""
