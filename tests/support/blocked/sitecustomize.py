"""Make the packages named in ``PATCHPACK_TEST_BLOCK`` (comma-separated) impossible to import, as
if they were not installed: the light install, inside the full test environment."""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {name for name in os.environ.get("PATCHPACK_TEST_BLOCK", "").split(",") if name}


class _NotInstalled(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, _NotInstalled())
