"""Translate a botocore exception into a failure kind and a one-line message that says how to fix it.

Each failure mode of an S3 remote gets its own kind and its own message, saying what failed, where,
and what to run:

==================  =================================================================================
kind                typical cause (botocore)
==================  =================================================================================
no-credentials      ``NoCredentialsError``: nothing in the environment, ``~/.aws`` or the profile
half-credentials    ``PartialCredentialsError``: a secret key without its key id, or the other way round
no-profile          ``ProfileNotFound``: the configured profile is not in the AWS config files
bad-credentials     ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, ``ExpiredToken``
access-denied       ``AccessDenied`` / HTTP 403: the credentials lack an s3 action
no-bucket           ``NoSuchBucket`` / HTTP 404
unreachable         ``EndpointConnectionError``, timeouts, TLS failures
wrong-region        ``AuthorizationHeaderMalformed``, ``PermanentRedirect``, ``IllegalLocationConstraint
                    Exception``, or a bucket whose ``x-amz-bucket-region`` differs from the remote's
==================  =================================================================================

Anything else is kind ``other``, with botocore's code and message. botocore is imported inside
:func:`explain`, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

from patchpack.sharing.spec import RemoteSpec

REGION_CODES = {
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "IllegalLocationConstraintException",
    "IncorrectEndpoint",
    "301",
}
CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
NO_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}


class RegionMismatch(Exception):
    """The server reported the bucket in another region than the one requests are signed for.

    No request fails in that case (HeadBucket succeeds and reports the region in a header), so the
    probe raises nothing; it passes this to :func:`explain` to get the same message as a real error.
    """

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.region = region


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ``ClientError`` (``"NoSuchBucket"``, ``"404"``, ...), else ``""``."""
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def explain(exc: BaseException, spec: RemoteSpec, action: str, region: str) -> tuple[str, str]:
    """The failure kind and one-line message for an exception raised by an S3 request.

    Parameters
    ----------
    exc : what the request raised (or a :class:`RegionMismatch`)
    spec : the remote the request went to
    action : the request in words, e.g. ``"PutObject"``, for the messages that name it
    region : the region requests are signed for

    Returns
    -------
    tuple of str
        ``(kind, message)``; ``kind`` is one of the table in this module's docstring, or ``other``.
    """
    from botocore import exceptions as bx

    endpoint = spec.endpoint_url or f"AWS S3 ({region})"
    if isinstance(exc, RegionMismatch):
        return "wrong-region", _wrong_region(spec, region, exc.region, "x-amz-bucket-region")
    if isinstance(exc, bx.PartialCredentialsError):
        return "half-credentials", _half_credentials(spec, exc.kwargs)
    if isinstance(exc, bx.NoCredentialsError):
        return "no-credentials", _no_credentials(spec)
    if isinstance(exc, bx.ProfileNotFound):
        return "no-profile", _no_profile(spec)
    if isinstance(
        exc,
        bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError | bx.SSLError,
    ):
        return "unreachable", (
            f"cannot reach the S3 endpoint {endpoint} for {spec.url} ({type(exc).__name__}): check "
            f"the address (`dvc remote modify {spec.name} endpointurl URL`), that the server runs, "
            f"and your network or proxy"
        )
    if not isinstance(exc, bx.ClientError):
        return "other", f"{action} on {spec.url} failed: {type(exc).__name__}: {exc}"
    return _explain_client_error(exc, spec, action, region)


def _explain_client_error(exc: Any, spec: RemoteSpec, action: str, region: str) -> tuple[str, str]:
    """:func:`explain` for a ``ClientError``: the server answered, its error code says why."""
    endpoint = spec.endpoint_url or f"AWS S3 ({region})"
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    actual = headers.get("x-amz-bucket-region") or error.get("Region")
    # A bare 400 is a region problem only when the server names another region (HEAD has no body).
    if code in REGION_CODES or (code == "400" and actual and actual != region):
        return "wrong-region", _wrong_region(spec, region, actual, code)
    if code in CREDENTIAL_CODES:
        return "bad-credentials", (
            f"the S3 endpoint {endpoint} rejected the credentials ({code}) for {spec.url}: check "
            f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, or renew an expired session token"
        )
    if code in NO_BUCKET_CODES:
        return "no-bucket", (
            f"no bucket {spec.bucket!r} at {endpoint}: check the name in `dvc remote list`, or create "
            f"it with `patchpack remote s3 {spec.url} --create-bucket`"
        )
    if code in DENIED_CODES:
        return "access-denied", (
            f"access denied: {action} on {spec.url} is not allowed for these credentials; ask the "
            f"bucket owner to grant it (pull needs s3:ListBucket and s3:GetObject, push also "
            f"s3:PutObject; see docs/sharing.md, 'Giving a partner read-only access')"
        )
    message = error.get("Message", "")
    return "other", f"{action} on {spec.url} failed: {code} {message}".strip()


def _no_credentials(spec: RemoteSpec) -> str:
    profile = f" --profile {spec.profile}" if spec.profile else ""
    return (
        f"no AWS credentials found for {spec.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        f"run `aws configure{profile}`, or name a profile with "
        f"`dvc remote modify --local {spec.name} profile NAME`"
    )


def _half_credentials(spec: RemoteSpec, found: dict[str, Any]) -> str:
    provider = found.get("provider", "the credentials")
    missing = found.get("cred_var", "a key")
    return (
        f"incomplete AWS credentials for {spec.url}: {provider} gives no {missing}; set the access key "
        f"id and the secret access key together (for DVC's config: `dvc remote modify --local "
        f"{spec.name} access_key_id ...` and `... secret_access_key ...`), or remove the half that is there"
    )


def _no_profile(spec: RemoteSpec) -> str:
    return (
        f"AWS profile {spec.profile!r} (remote '{spec.name}') is not in ~/.aws/config or "
        f"~/.aws/credentials: create it with `aws configure --profile {spec.profile}` or change it "
        f"with `dvc remote modify --local {spec.name} profile NAME`"
    )


def _wrong_region(spec: RemoteSpec, region: str, actual: str | None, code: str) -> str:
    if actual:
        return (
            f"bucket {spec.bucket!r} is in region {actual}, but remote '{spec.name}' uses {region}: "
            f"run `dvc remote modify {spec.name} region {actual}`"
        )
    return (
        f"bucket {spec.bucket!r} is not in region {region} ({code}): set the bucket's region with "
        f"`dvc remote modify {spec.name} region REGION`"
    )
