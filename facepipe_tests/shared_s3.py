"""A real S3 API server on loopback for the tests (moto's server mode, a separate process), and the
variables that point facepipe at it. No client is mocked: facepipe talks HTTP to it as to a bucket."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_PATIENCE = 120.0
"""Seconds the server may take to answer its first request on a busy machine."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_PATIENCE
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the S3 test server did not start (see {log.name})") from None
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    proc.wait(30)
    log.close()


S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1"}


def s3_env(endpoint: str) -> dict[str, str]:
    """The variables a facepipe process needs to reach the test server (credentials are the server's dummies)."""
    return {**S3_ENV, "FACEPIPE_S3_ENDPOINT": endpoint}


def client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_REGION"],
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new empty bucket on the test server."""
    name = f"facepipe-{uuid.uuid4().hex[:12]}"
    client(s3_endpoint).create_bucket(Bucket=name)
    return name


def upload(endpoint: str, bucket: str, prefix: str, files: dict[str, Path]) -> None:
    """Put sample photos into the bucket under `prefix/` (key -> local file)."""
    s3 = client(endpoint)
    for key, path in files.items():
        s3.upload_file(str(path), bucket, f"{prefix}/{key}")


def object_names(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """The objects under a prefix, without the empty `folder/` markers pyarrow leaves as it deletes."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
