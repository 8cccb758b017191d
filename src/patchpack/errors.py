"""The exceptions patchpack raises.

Every error a user can cause derives from :class:`PatchpackError`; the CLI prints its message on one
line and exits with code 2 (bad input or configuration) or 1 (verification failed). Messages say what
was wrong, where, and how to fix it.
"""

from __future__ import annotations


class PatchpackError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""

    exit_code = 2


class ConfigError(PatchpackError, ValueError):
    """params.yaml (or a command-line override) is missing, malformed or impossible."""


class SourceError(PatchpackError, ValueError):
    """A source folder or image cannot be used (missing, empty, corrupt, too small, too large)."""


class IntegrityError(PatchpackError):
    """A dataset on disk does not match its manifest (missing, extra, truncated or altered shards)."""

    exit_code = 1


class RemoteError(PatchpackError):
    """A DVC remote cannot be used: no credentials, unreachable endpoint, no bucket, no permission."""


class ModelError(PatchpackError):
    """A model file is missing, unreadable or does not fit the dataset."""


class OutputError(PatchpackError):
    """The output cannot be written: another writer holds it, no space, no permission, a size limit."""


class ClusterError(PatchpackError):
    """A Dask cluster cannot be used: unreachable, gone, or a worker in another environment."""


class NotPulledError(PatchpackError):
    """A split the manifest lists is not on disk (a partial pull): pull it before reading it."""
