"""Objects of a DVC remote's content-addressed store, fetched one by one and checked by hash.

A DVC remote keeps every file under its md5 (``files/md5/ab/cdef...``) and a tracked folder as a
``.dir`` object listing ``(relpath, md5)`` pairs. Fetching the objects a split needs, named by the
committed ``.dir`` hash, is a partial pull that needs nothing from DVC but its filesystem layer (the
remote's url, endpoint, credentials and anonymous access come from DVC's config). Every object is
checked against the md5 that names it before it reaches a final path, since a remote may serve
anything: DVC's own pull does not re-hash what it downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from patchpack.errors import IntegrityError, RemoteError

BLOCK = 1 << 20
MAX_LISTING_BYTES = 256 << 20


class RemoteObjects:
    """The object store of the DVC remote ``name`` (default: the project's default remote).

    ``received`` counts the bytes fetched, for reports and tests.
    """

    def __init__(self, root: Path, name: str | None = None) -> None:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        try:
            self._repo = Repo(os.fspath(root))
            self._odb: Any = self._repo.cloud.get_remote_odb(name, command="patchpack pull")
        except DvcException as exc:
            raise RemoteError(f"{root}: the DVC remote cannot be opened ({exc})") from exc
        self.received = 0

    @classmethod
    def of(cls, repo: Any, odb: Any) -> RemoteObjects:
        """The object store ``odb`` of the DVC repository ``repo``, already open (closed with it)."""
        store = cls.__new__(cls)
        store._repo, store._odb, store.received = repo, odb, 0
        return store

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> RemoteObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, md5: str) -> str:
        return str(self._odb.oid_to_path(md5))

    def size(self, md5: str) -> int:
        """Bytes of object ``md5`` on the remote, from its metadata (nothing is downloaded)."""
        try:
            return int(self._odb.fs.size(self._path(md5)))
        except FileNotFoundError:
            raise RemoteError(
                f"the remote lacks object {md5} (it was never pushed there)"
            ) from None
        except OSError as exc:
            raise RemoteError(f"cannot read object {md5} from the remote ({exc})") from exc
        except Exception as exc:
            problem = _unreachable(exc, md5)
            if problem is None:
                raise
            raise problem from exc

    def listing(self, md5: str) -> tuple[bytes, dict[str, str]]:
        """The ``.dir`` object ``md5`` (checked against its name) and its ``relpath -> md5`` map."""
        data = self._read(md5, MAX_LISTING_BYTES)
        try:
            items = json.loads(data)
            return data, {str(item["relpath"]): str(item["md5"]) for item in items}
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(
                f"the remote's listing {md5} hashes right but is not a DVC directory listing"
            ) from exc

    def _read(self, md5: str, limit: int) -> bytes:
        chunks, digest, size = [], hashlib.md5(usedforsecurity=False), 0
        for chunk in self._chunks(md5):
            size += len(chunk)
            if size > limit:
                raise IntegrityError(f"the remote's object {md5} is larger than {limit} bytes")
            digest.update(chunk)
            chunks.append(chunk)
        _check(md5, digest.hexdigest(), "object")
        return b"".join(chunks)

    def _chunks(self, md5: str) -> Any:
        try:
            with self._odb.fs.open(self._path(md5), "rb") as handle:
                while chunk := handle.read(BLOCK):
                    self.received += len(chunk)
                    yield chunk
        except FileNotFoundError:
            raise RemoteError(
                f"the remote lacks object {md5} (it was never pushed there); ask the owner to "
                f"`dvc push`, or rebuild with `patchpack pull --rebuild`"
            ) from None
        except OSError as exc:
            raise RemoteError(f"cannot read object {md5} from the remote ({exc})") from exc
        except Exception as exc:
            problem = _unreachable(exc, md5)
            if problem is None:
                raise
            raise problem from exc

    def download(self, md5: str, target: Path) -> int:
        """Fetch object ``md5`` to ``target`` (atomically, beside it), refused unless its bytes hash
        to ``md5``. Returns the bytes fetched."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.fetch-{os.getpid()}")
        digest, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with open(tmp, "wb") as handle:
                for chunk in self._chunks(md5):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
            _check(md5, digest.hexdigest(), str(target))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size


def _unreachable(exc: Exception, md5: str) -> RemoteError | None:
    """An S3 client's own error (botocore's are not ``OSError``) in one line; ``None`` for others."""
    if not type(exc).__module__.startswith(("botocore", "aiobotocore", "s3fs")):
        return None
    text = " ".join(str(exc).split()) or type(exc).__name__
    return RemoteError(
        f"cannot read object {md5} from the remote ({text}); check the remote's endpoint and "
        f"the network (`patchpack remote check` probes it)"
    )


def _check(want: str, got: str, what: str) -> None:
    if want.removesuffix(".dir") != got:
        raise IntegrityError(
            f"{what}: the remote served bytes with md5 {got} for object {want}: the remote is "
            f"damaged or not the owner's; nothing was kept"
        )
