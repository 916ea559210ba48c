"""A local S3 API on loopback for Tansu's durable ``s3://`` storage engine: moto's server
(``moto_server``, a dev dependency), started and stopped by the tests.

Tansu (object_store) signs its requests with the AWS settings it reads from the environment;
:meth:`LocalS3.broker_env` gives them. With that storage a Tansu broker can be SIGKILLed and
started again on the same port and keeps its topics, records and committed offsets, which the
in-memory engine cannot (docs/operations-notes.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.stack import free_port, wait_until

REGION = "eu-west-2"


class LocalS3:
    """``with LocalS3(log) as s3:`` -> a running S3 endpoint with ``s3.bucket`` created."""

    def __init__(self, log_path: Path, bucket: str = "tansu") -> None:
        self.log_path = log_path
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> str:
        return f"s3://{self.bucket}/"

    def broker_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "accessguard-test",
            "AWS_SECRET_ACCESS_KEY": "accessguard-test-secret",
            "AWS_DEFAULT_REGION": REGION,
        }

    def objects(self) -> int:
        """How many objects the bucket holds (Tansu writes segments and metadata)."""
        body = requests.get(f"{self.url}/{self.bucket}?list-type=2", timeout=10).text
        return body.count("<Key>")

    def start(self) -> LocalS3:
        server = Path(sys.executable).with_name("moto_server")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

        def answers() -> bool:
            try:
                return requests.get(self.url, timeout=1).status_code < 500
            except requests.RequestException:
                return False

        wait_until(answers, 30, what="moto S3 server")
        created = requests.put(
            f"{self.url}/{self.bucket}",
            data=(
                "<CreateBucketConfiguration><LocationConstraint>"
                f"{REGION}</LocationConstraint></CreateBucketConfiguration>"
            ),
            timeout=10,
        )
        created.raise_for_status()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
