"""What a remote check works on and produces: the remote, one check, the report, the failure.

These types carry no I/O and import nothing heavy, so every other ``patchpack.sharing`` module (and
the command line) can use them without loading boto3 or DVC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from patchpack.errors import RemoteError

DEFAULT_NAME = "storage"
PROBE_PREFIX = ".patchpack-probe-"
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token")
# The S3 checks in the order a request depends on them; a failure skips the ones after it.
CHECK_NAMES = ("credentials", "endpoint", "bucket", "region", "list", "read", "write")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class RemoteCheckFailed(RemoteError):
    """A remote probe failed; ``kind`` names the failure mode, ``report`` holds every check."""

    def __init__(self, message: str, kind: str, report: RemoteReport | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.report = report


@dataclass(frozen=True)
class RemoteSpec:
    """A DVC remote as patchpack checks it: name, url and the non-secret S3 options.

    ``url`` is ``s3://bucket/prefix`` or an absolute local directory. ``secrets`` holds keys found in
    DVC's config (``.dvc/config.local``); they are passed to boto3 and never printed.
    """

    name: str
    url: str
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    public: bool = False  # DVC's allow_anonymous_login: unsigned requests when no credentials

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.url)[0]

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.url)[1]

    def describe(self) -> str:
        parts = [f"remote '{self.name}': {self.url}"]
        if self.endpoint_url:
            parts.append(f"endpoint {self.endpoint_url}")
        if self.region:
            parts.append(f"region {self.region}")
        if self.profile:
            parts.append(f"profile {self.profile}")
        if self.public:
            parts.append("public (anonymous reads)")
        return ", ".join(parts)


@dataclass(frozen=True)
class Check:
    """One probe: ``status`` is ``ok``, ``fail``, ``no`` (failed but not needed) or ``skip``."""

    name: str
    status: str
    detail: str
    kind: str = ""


@dataclass
class RemoteReport:
    """Every probe of one remote, in the order a request depends on them."""

    spec: RemoteSpec
    checks: list[Check] = field(default_factory=list)
    region: str | None = None  # the bucket's region, when the server reports it
    anonymous: RemoteReport | None = None  # with --public: the same remote probed without signing

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]

    def status(self, name: str) -> str:
        for check in self.checks:
            if check.name == name:
                return check.status
        return "skip"

    def render(self) -> str:
        marks = {"ok": "ok  ", "fail": "FAIL", "no": "no  ", "skip": "--  "}
        lines = [self.spec.describe()]
        lines += [f"  {marks[c.status]} {c.name:<12} {c.detail}" for c in self.checks]
        if self.ok:
            usable = {
                "ok": "push and pull",
                "no": "pull only (read-only)",
            }.get(self.status("write"), "pull (write not checked)")
            lines.append(f"  usable for: {usable}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise :class:`RemoteCheckFailed` with the first failure's one-line message."""
        if self.failures:
            first = self.failures[0]
            raise RemoteCheckFailed(first.detail, first.kind, self)


def _userinfo_end(url: str) -> int | None:
    """Where the ``user:password`` part of ``url`` ends (the index of its ``@``), or ``None``."""
    scheme = _SCHEME_RE.match(url)
    if scheme is None:
        return None
    rest = url[scheme.end() :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        return scheme.end() + authority.rindex("@")
    # A secret access key may hold '/', which ends the authority early: KEY:SE/CRET@host.
    if ":" in authority and "@" in rest:
        return scheme.end() + rest.rindex("@")
    return None


def mask_credentials(url: str) -> str:
    """``url`` with its ``user:password`` part (if any) shown as ``***``."""
    end = _userinfo_end(url)
    scheme = _SCHEME_RE.match(url)
    if end is None or scheme is None:
        return url
    return f"{url[: scheme.end()]}***{url[end:]}"


def refuse_credentials(url: str, what: str, *, allow_user: bool = False) -> None:
    """Refuse a url that carries credentials (``scheme://KEY:SECRET@host``).

    DVC keeps a remote's url in plain text, in the ``.dvc/config`` that git commits; the message shows
    the url with the credentials masked.

    Parameters
    ----------
    url : the remote url or endpoint
    what : names the url in the message, e.g. ``"--endpoint-url"``
    allow_user : accept a user name without a password (``ssh://user@host/path`` is how DVC names an
        SSH remote's user); an S3 url or endpoint has no use for either

    Raises
    ------
    RemoteError
        When ``url`` carries credentials.
    """
    end = _userinfo_end(url)
    scheme = _SCHEME_RE.match(url)
    if end is None or scheme is None:
        return
    if allow_user and ":" not in url[scheme.end() : end]:
        return
    raise RemoteError(
        f"{what} {mask_credentials(url)} carries credentials (hidden here as ***), which DVC keeps in "
        f"plain text in its config; remove them from the url and give the keys as AWS_ACCESS_KEY_ID "
        f"and AWS_SECRET_ACCESS_KEY, an AWS profile, or `dvc remote modify --local NAME OPTION VALUE`"
    )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``.

    Raises
    ------
    RemoteError
        When the url carries credentials, is not ``s3://``, or the bucket name is not a valid S3
        bucket name.
    """
    refuse_credentials(url, "remote url")
    match = re.match(r"^s3://([^/]+)/*(.*?)/*$", url)
    if match is None:
        raise RemoteError(f"{url!r} is not an S3 url; write it as s3://BUCKET/PREFIX")
    bucket, prefix = match.groups()
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise RemoteError(
            f"{url}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.' or '-')"
        )
    return bucket, prefix
