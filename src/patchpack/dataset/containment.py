"""Where a dataset's files may resolve: inside the dataset folder, or into the object store of its
project's DVC cache (DVC's ``cache.type symlink`` checkout)."""

from __future__ import annotations

from pathlib import Path

from patchpack.errors import IntegrityError


def contained(folder: Path, relative: str) -> Path:
    """``folder / relative``, refused when it resolves outside ``folder``.

    A link is accepted only when it resolves into the object store of the DVC cache of the project
    that holds ``folder`` (``.dvc/cache/files/``, or the ``cache.dir`` its config names): that is how
    DVC's ``cache.type symlink`` checks a dataset out. A link anywhere else is refused, since a
    dataset must hold its own shards.

    Raises
    ------
    IntegrityError
        When the path resolves outside ``folder`` and outside its project's DVC cache.
    """
    path = Path(folder) / relative
    root = Path(folder).resolve()
    target = path.resolve()
    if root in target.parents:
        return path
    cache = dvc_cache_objects(root)
    if cache is not None and cache in target.parents:
        return path
    raise IntegrityError(
        f"{relative}: resolves to {target}, outside the dataset folder {root} and outside its "
        f"project's DVC cache (a symlink); a dataset must hold its own shards: pull or extract it again"
    )


def dvc_cache_objects(folder: Path) -> Path | None:
    """The object folder of the DVC cache of the project holding ``folder`` (``None`` outside one).

    It is ``.dvc/cache/files`` unless ``.dvc/config`` or ``.dvc/config.local`` sets ``cache.dir``
    (relative to ``.dvc``), the later file winning as in DVC.
    """
    import configparser

    for project in (folder, *folder.parents):
        dvc_dir = project / ".dvc"
        if not dvc_dir.is_dir():
            continue
        cache = dvc_dir / "cache"
        for name in ("config", "config.local"):
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(dvc_dir / name, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError):
                continue
            if parser.has_option("cache", "dir"):
                cache = (dvc_dir / parser.get("cache", "dir")).expanduser()
        return (cache / "files").resolve()
    return None
