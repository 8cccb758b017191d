"""A Dask worker preload (``distributed.worker.preload: [support.other_numpy]``): the worker claims
numpy 1.0.0, both to Dask (whose client then warns with a table of versions) and to patchpack's
environment envelope (which refuses the worker).

Imported in the worker process before it registers with the scheduler, so Dask's own version
report already carries the other version.
"""

from __future__ import annotations

from distributed import versions

from patchpack.dataset import envelope

_package_version = versions._version_cached
_envelope = envelope.current_environment


def _claimed_version(package: str) -> str | None:
    return "1.0.0" if package == "numpy" else _package_version(package)


def _claimed_envelope() -> dict[str, str]:
    return {**_envelope(), "numpy": "1.0.0"}


versions._version_cached = _claimed_version
envelope.current_environment = _claimed_envelope  # type: ignore[assignment]
