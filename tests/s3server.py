"""A real S3-API server on loopback for tests: moto's ``ThreadedMotoServer``.

``s3_bucket`` starts one server per test on 127.0.0.1 at a free port, points the usual AWS
variables at it (dummy keys, ``AWS_ENDPOINT_URL``, a region) with ``monkeypatch`` and makes a
bucket with boto3; the server stops at teardown. Import the fixture into a test module with
``from s3server import s3_bucket_fixture  # noqa: F401``.

``require_credentials(server)`` makes moto check keys (it accepts any by default): it creates an
IAM user with an access key allowed ``s3:*`` and then turns moto's authentication on, so only
that key works. Authentication is process-wide moto state; the fixture turns it off again.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

REGION = "us-east-1"
DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"


@dataclass
class S3Server:
    """Where the test server is and what it holds."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str

    def url(self, prefix: str) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def client(self, key_id: str = DUMMY_KEY_ID, secret: str = DUMMY_SECRET):  # noqa: ANN201
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=REGION,
        )


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_auth(endpoint: str, no_auth_count: float) -> None:
    """moto's switch: the first ``no_auth_count`` requests skip key checks (inf: never checked)."""
    import requests

    reply = requests.post(
        f"{endpoint}/moto-api/reset-auth", data=str(no_auth_count).encode(), timeout=10
    )
    reply.raise_for_status()


def require_credentials(server: S3Server) -> tuple[str, str]:
    """Turn key checks on; return the one (key id, secret) that is then accepted."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=server.endpoint,
        aws_access_key_id=DUMMY_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET,
        region_name=REGION,
    )
    iam.create_user(UserName="tsf-test")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="tsf-test", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="tsf-test")["AccessKey"]
    _set_auth(server.endpoint, 0)
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A moto S3 server on loopback with one empty bucket, and the AWS variables pointing at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    s3 = S3Server(endpoint=endpoint, bucket="tsf-test-bucket")
    try:
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        try:
            _set_auth(endpoint, float("inf"))
        finally:
            server.stop()
