# The image compose.yaml runs (README.md#deployment). Not built by the test suite, which
# has no Docker: tests/test_compose.py checks what compose.yaml asks of it instead.
FROM python:3.12-slim

WORKDIR /app
# Installed from the checkout (editable): the migrations are read from ./migrations.
COPY . .
# postgres: the asyncpg driver; s3: the bucket client (R2, S3, MinIO).
RUN pip install --no-cache-dir -e '.[postgres,s3]' \
    && useradd --system --home-dir /app rag \
    && mkdir -p /app/data && chown rag /app/data
# Each process's own scratch: an upload is checked here before it goes to the bucket.
USER rag
EXPOSE 8000
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-ingest"]
