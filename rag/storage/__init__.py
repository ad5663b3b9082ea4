"""Where uploaded files' bytes are kept: a folder of this machine, or an S3-compatible bucket.

``[storage] url`` chooses (``rag.registry.blob_store``): empty or a path is a folder
(``folder.FolderStore``; the default is ``[uploads] folder``, as before there was a
choice), ``s3://bucket/prefix`` a bucket (``bucket.BucketStore``: Amazon S3, Cloudflare
R2, MinIO...) that every replica and ``rag worker`` reads, wherever it runs.

Only uploads live there. A document ingested from a server folder (``rag ingest PATH``)
keeps its path on the machine that ingested it as its source: that folder belongs to
the operator, not to the service.

Deleting bytes may fail (a bucket out of reach); ``cleanup`` records each deletion in
the transaction that makes the bytes garbage and retries what is left
(docs/design.md#uploaded-files).
"""
