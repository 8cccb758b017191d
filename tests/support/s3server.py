"""Loopback S3 servers for tests: a real S3-protocol server (moto in server mode) and a scripted one.

``moto_server()`` starts one :class:`MotoS3` per test process (threads, 127.0.0.1, a free port) and
returns it on later calls, so every test module shares it whatever fixture wraps it. ``MotoS3`` can
turn on moto's IAM enforcement for a block (``with server.iam_enforced():``) and create IAM users
with a given policy, which gives real ``AccessDenied`` and ``InvalidAccessKeyId`` answers.

``ScriptedS3`` answers every request with one fixed status, headers and XML error body: real S3's
region errors (``PermanentRedirect``, ``AuthorizationHeaderMalformed``), which moto does not send.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DUMMY_KEY = "testing-key-id"
DUMMY_SECRET = "testing-secret"
REGION = "us-east-1"
# what CountingProxy adds to an anonymous request a bucket policy allows (moto checks no signature)
ANONYMOUS_ALLOWED = (
    f"AWS4-HMAC-SHA256 Credential={DUMMY_KEY}/20260101/{REGION}/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)

_SERVER: MotoS3 | None = None


def free_port() -> int:
    """A loopback TCP port that nothing listens on (closed again right away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aws_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment variables for boto3/DVC: dummy keys, empty AWS config files under ``home``.

    The user's own ``~/.aws`` and DVC config are never read: HOME and XDG_CONFIG_HOME point into
    ``home`` and the AWS config files are empty files there.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "aws-credentials").touch()
    (home / "aws-config").touch()
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "GIT_AUTHOR_NAME": "patchpack tests",
        "GIT_AUTHOR_EMAIL": "tests@patchpack.invalid",
        "GIT_COMMITTER_NAME": "patchpack tests",
        "GIT_COMMITTER_EMAIL": "tests@patchpack.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    env.update(extra)
    return env


AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


class MotoS3:
    """moto's S3 (and IAM) in server mode on 127.0.0.1, in a daemon thread."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def client(
        self,
        service: str = "s3",
        key: str = DUMMY_KEY,
        secret: str = DUMMY_SECRET,
        region: str = REGION,
    ) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def create_bucket(self, name: str, region: str = REGION) -> None:
        client = self.client(region=region)
        if region == "us-east-1":
            client.create_bucket(Bucket=name)
        else:
            client.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": region}
            )

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key -> size in bytes."""
        client = self.client()
        found: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found

    def create_user(self, name: str, policy: dict[str, Any] | None) -> tuple[str, str]:
        """An IAM user with ``policy`` inline (or none); returns (access key id, secret)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        if policy is not None:
            iam.put_user_policy(
                UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy)
            )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextlib.contextmanager
    def iam_enforced(self) -> Iterator[None]:
        """Within the block, every request is authenticated and authorized against moto's IAM."""
        import urllib.request

        def reset(value: bytes) -> None:
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth",
                data=value,
                method="POST",
                headers={"Content-Type": "text/plain"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()

        reset(b"0")
        try:
            yield
        finally:
            reset(b"inf")

    def stop(self) -> None:
        self._server.stop()


def moto_server() -> MotoS3:
    """The test process's one moto server, started on first use."""
    global _SERVER
    if _SERVER is None:
        _SERVER = MotoS3()
    return _SERVER


class ScriptedS3:
    """An HTTP server on 127.0.0.1 that answers every request with one canned S3 error."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>0</RequestId></Error>"
        ).encode()
        extra = dict(headers or {})
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ScriptedS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class CountingProxy:
    """A loopback HTTP proxy in front of an S3 server that records every request and the bytes of
    every answer: a test's view of what a client fetched (``gets`` lists the object keys read).

    Requests are forwarded as they came, ``Host`` header included, so signatures stay valid.
    """

    def __init__(self, upstream: str, *, anonymous_by_policy: bool = False) -> None:
        import http.client
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.requests: list[tuple[str, str, int, str]] = []
        seen = self.requests
        readable = _public_reader(upstream) if anonymous_by_policy else None

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _refuse(self) -> None:
                body = (
                    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                    b"<Message>Access Denied</Message><RequestId>0</RequestId></Error>"
                )
                seen.append((self.command, self.path, 0, "refused"))
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                signed = "Authorization" in self.headers or "X-Amz-Signature" in self.path
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                if readable is not None and not signed:
                    if not readable(self.command, self.path):
                        self._refuse()
                        return
                    # allowed by the bucket policy, as S3 decides it (GetObject covers HEAD, which
                    # moto's anonymous check does not know): passed on as an authorized request
                    headers["Authorization"] = ANONYMOUS_ALLOWED
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                seen.append((self.command, self.path, len(data), self.headers.get("Range", "")))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # a HEAD answer has no body but says the object's size
                size = answer.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", size or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def refused(self) -> int:
        return sum(1 for *_, span in self.requests if span == "refused")

    def bytes_by_object(self) -> dict[str, int]:
        """Bytes received per object (the last two parts of its key, as DVC names an object by
        its md5: ``ab`` + ``cdef...``), over every GET of it, ranged or whole."""
        found: dict[str, int] = {}
        for method, path, size, _ in self.requests:
            if method == "GET" and "?" not in path:
                parts = path.rstrip("/").split("/")
                key = parts[-2] + parts[-1]
                found[key] = found.get(key, 0) + size
        return found

    def received(self) -> int:
        return sum(size for method, _, size, _ in self.requests if method == "GET")

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _public_reader(upstream: str) -> Any:
    """Whether an anonymous request may pass, as real S3 decides it: only GET/HEAD (and listing) on
    a bucket whose bucket policy allows ``s3:GetObject`` to ``Principal: *``. moto serves unsigned
    requests to every bucket (and fails on them when IAM is enforced), so the proxy decides."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=upstream,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_SECRET,
    )

    def readable(method: str, path: str) -> bool:
        bucket = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD") or not bucket:
            return False
        try:
            policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
        except Exception:  # no policy (NoSuchBucketPolicy) or no bucket: private
            return False
        return any(
            statement.get("Effect") == "Allow"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and "s3:GetObject" in str(statement.get("Action"))
            for statement in policy.get("Statement", [])
        )

    return readable


def isolate_aws(monkeypatch: Any, home: Path, **values: str) -> dict[str, str]:
    """Point this process's boto3 at ``aws_env(home)``; every other AWS variable is removed."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    env = aws_env(home, **values)
    for name, value in env.items():
        if name.startswith(("AWS_", "HOME", "XDG_", "DVC_")):
            monkeypatch.setenv(name, value)
    for name in [n for n in AWS_VARS if n in values and values[n] == ""]:
        monkeypatch.delenv(name, raising=False)
    return env


def subprocess_env(home: Path, **values: str) -> dict[str, str]:
    """``os.environ`` without AWS variables, plus ``aws_env(home)``, with the venv's bin first on PATH.

    A value of ``""`` removes the variable (``AWS_ACCESS_KEY_ID=""`` for a run without credentials).
    """
    import sys

    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    env.update(aws_env(home))
    env.update(values)
    env = {k: v for k, v in env.items() if v != ""}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
