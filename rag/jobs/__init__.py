"""Ingestion jobs as database rows, so that every replica and worker sees the same ones.

``POST /v1/ingest``, uploads and ``rag ingest`` enqueue a row in ``jobs``
(``rag.jobs.queue``); workers (``rag worker``, and ``rag serve`` itself unless
``[jobs] run_in_server`` is off) claim and run them (``rag.jobs.worker``), writing a
heartbeat and the progress to the row; ``GET /v1/jobs/{id}`` reads it on any replica.
A partial unique index on the target keeps one queued or running job per folder across
every process, and a job whose heartbeat went stale is claimed again.
"""
