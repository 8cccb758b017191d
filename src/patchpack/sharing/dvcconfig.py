"""The DVC side of a remote: find the project, read and write DVC's config, run ``python -m dvc``.

Only non-secret settings are written to the committed ``.dvc/config`` (url, endpoint, region); the
profile name goes to ``.dvc/config.local``, and keys stay in the environment or the AWS config files.
DVC is imported inside the functions that need it, so ``patchpack --help`` stays fast.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from patchpack.errors import RemoteError
from patchpack.sharing.spec import DEFAULT_NAME, SECRET_OPTIONS, RemoteSpec, refuse_credentials


def find_root(start: str | Path = ".") -> Path:
    """The DVC project folder containing ``start`` (the folder holding ``.dvc/``).

    Raises
    ------
    RemoteError
        When neither ``start`` nor any folder above it holds a ``.dvc`` folder.
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise RemoteError(
        f"{here}: not inside a DVC project (no .dvc folder); run from the project or `dvc init`"
    )


def _dvc_config(root: Path) -> Any:
    from dvc.config import Config, ConfigError

    try:
        return Config(dvc_dir=str(root / ".dvc"))
    except ConfigError as exc:
        raise RemoteError(
            f"{root / '.dvc'}: DVC config is invalid ({exc}); fix it with `dvc config`"
        ) from exc


def load_remote(root: str | Path = ".", name: str | None = None) -> RemoteSpec:
    """The remote ``name`` (default: DVC's default remote) from the merged DVC config.

    Raises
    ------
    RemoteError
        When there is no DVC project, no default remote, no remote of that name, or its url or
        endpoint carries credentials.
    """
    root = find_root(root)
    config = _dvc_config(root)
    remotes = config.get("remote", {})
    if name is None:
        name = config.get("core", {}).get("remote")
        if not name:
            raise RemoteError(
                f"{root}: no default DVC remote; set one with `patchpack remote s3 s3://BUCKET/PREFIX` "
                f"or `patchpack remote local DIR`"
            )
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(
            f"{root}: no DVC remote named {name!r} (configured: {known}); "
            f"add it with `patchpack remote s3 ... --name {name}` or see `dvc remote list`"
        )
    section = remotes[name]
    secrets = {key: str(section[key]) for key in SECRET_OPTIONS if section.get(key)}
    url = str(section["url"])
    endpoint_url = section.get("endpointurl")
    refuse_credentials(url, f"{root / '.dvc'}: remote '{name}' url", allow_user=True)
    if endpoint_url:
        refuse_credentials(str(endpoint_url), f"{root / '.dvc'}: remote '{name}' endpointurl")
    return RemoteSpec(
        name=name,
        url=url,
        endpoint_url=endpoint_url,
        profile=section.get("profile"),
        region=section.get("region"),
        secrets=secrets,
        public=str(section.get("allow_anonymous_login", "")).lower() == "true",
    )


def committed_secrets(root: Path) -> list[str]:
    """``remote.NAME.option`` for every credential found in the committed ``.dvc/config``."""
    config = _dvc_config(root)
    repo = config.load_one("repo")
    return [
        f"remote.{name}.{key}"
        for name, section in sorted(repo.get("remote", {}).items())
        for key in SECRET_OPTIONS
        if section.get(key)
    ]


def run_dvc(args: list[str], root: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` with this interpreter's DVC in ``root``.

    Raises
    ------
    RemoteError
        When ``check`` is true and DVC exits non-zero; the message holds DVC's last output line.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise RemoteError(f"`dvc {' '.join(args)}` failed in {root}: {detail}")
    return proc


def configure_s3(
    root: Path,
    url: str,
    *,
    name: str = DEFAULT_NAME,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    public: bool = False,
) -> None:
    """Make ``url`` DVC's default remote. Endpoint, region and anonymous reads (``public``) are
    committed; the profile is local."""
    run_dvc(["remote", "add", "--default", "--force", name, url], root)
    if public:
        # partners (the committed config) read anonymously; DVC then signs nothing, so the owner's
        # own config.local turns it off again for pushing with credentials
        run_dvc(["remote", "modify", name, "allow_anonymous_login", "true"], root)
        run_dvc(["remote", "modify", "--local", name, "allow_anonymous_login", "false"], root)
    if endpoint_url:
        run_dvc(["remote", "modify", name, "endpointurl", endpoint_url], root)
    if region:
        run_dvc(["remote", "modify", name, "region", region], root)
    local = _dvc_config(root).load_one("local").get("remote", {}).get(name, {})
    if profile:
        run_dvc(["remote", "modify", "--local", name, "profile", profile], root)
    elif local.get("profile"):
        # A profile left from an earlier setup would keep signing with the old identity.
        run_dvc(["remote", "modify", "--local", name, "--unset", "profile"], root)
