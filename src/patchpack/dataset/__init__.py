"""The dataset wing: the code that decides shard and manifest bytes.

Sources (discovery and decoding), the seeded plan, the shard writer, the manifest and the extract
stage. It imports nothing from the other wings (where the work runs is :mod:`patchpack.engine`).

:data:`BYTE_DECIDING` is the one list of what decides a dataset's bytes: this folder, and the params
declarations, the schema that writes them into the manifest and the version the manifest records.
dvc.yaml's extract stages depend on exactly these paths, the staged-shard digest hashes exactly
their modules, and a test keeps the three equal.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/patchpack
BYTE_DECIDING = ("dataset", "params", "schema.py", "_version.py")  # relative to src/patchpack


def byte_deciding_modules() -> dict[str, Path]:
    """Every module of :data:`BYTE_DECIDING`, by POSIX path relative to ``src/patchpack``."""
    found: dict[str, Path] = {}
    for entry in BYTE_DECIDING:
        path = PACKAGE_ROOT / entry
        for module in [path] if path.is_file() else sorted(path.rglob("*.py")):
            found[module.relative_to(PACKAGE_ROOT).as_posix()] = module
    return found
