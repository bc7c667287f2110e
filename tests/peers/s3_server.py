"""A loopback S3 server for the s3:// destination tests: moto's server, which speaks the S3 wire
format (REST, XML, SigV4, versioning), on 127.0.0.1 only, with s3fs pointed at it through the
standard AWS variables (`AWS_ENDPOINT_URL`, keys): the same way a user points the project at any
S3-compatible store."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: what a test sets (and clears) so s3fs and boto3 talk to the loopback server and nothing else
TEST_SECRET = "test-secret-0123456789abcdef"


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_environment(endpoint: str) -> dict[str, str]:
    """The standard variables botocore (under s3fs) reads: this endpoint, test keys, no config files, no
    instance metadata lookups (which would leave loopback)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass
class S3Bucket:
    """A fresh versioned bucket on the loopback server: every PUT of a key adds a version, so a test
    counts the writes the server received."""

    client: Any
    name: str

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}".rstrip("/")

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def versions(self, prefix: str = "") -> dict[str, int]:
        """How many times each key under `prefix` was written."""
        counts: dict[str, int] = {}
        listed = self.client.list_object_versions(Bucket=self.name, Prefix=prefix)
        for version in listed.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
        return counts


def new_bucket(endpoint: str) -> S3Bucket:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=TEST_SECRET,
    )
    name = f"t{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return S3Bucket(client, name)
