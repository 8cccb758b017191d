"""README.md keeps its promises: the command table is the CLI's verb list, the Python example runs
(and refuses a dataset that fails verification), Setup and Testing run what CI runs, and every link
of the README and of the docs site resolves (``mkdocs build --strict``)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import h5py
import hdf5plugin  # noqa: F401  (registers the zstd filter for editing a shard in place)
import numpy as np
import pytest

from patchpack import IntegrityError
from patchpack.cli import main
from patchpack.dataset.extract import extract
from support.images import make_folder, small_params

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code(markdown: str) -> str:
    """``markdown`` with its fenced blocks removed (a ``#`` comment there is not a heading)."""
    return FENCE.sub("", markdown)


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section, up to the next ``##`` heading outside a code block."""
    lines: list[str] = []
    inside = fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            if inside:
                break
            inside = line.rstrip("\n") == f"## {title}"
            continue
        if inside:
            lines.append(line)
    assert lines, f"no '## {title}' section"
    return "".join(lines)


def code_blocks(markdown: str, *languages: str) -> list[str]:
    """The fenced code blocks of ``markdown`` in one of ``languages``."""
    return [body for lang, body in FENCE.findall(markdown) if lang in languages]


def commands(block: str) -> list[str]:
    """The commands a shell block runs: comments and blank lines dropped."""
    lines = (re.sub(r"(^|\s+)#.*$", "", line).strip() for line in block.splitlines())
    return [line for line in lines if line]


def help_text(*verb: str) -> str:
    """What ``patchpack VERB... --help`` prints, on a wide terminal (no wrapped lines)."""
    out = io.StringIO()
    with (
        mock.patch.dict(os.environ, {"COLUMNS": "200"}),
        contextlib.redirect_stdout(out),
        pytest.raises(SystemExit) as exited,
    ):
        main([*verb, "--help"])
    assert exited.value.code == 0
    return out.getvalue()


def listed_verbs(text: str) -> list[str]:
    """The verbs (or remote kinds) an argparse help lists under its positional arguments."""
    if "positional arguments:" not in text:
        return []
    listing = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    # a verb too long for the help column has its help on the next line
    return re.findall(r"^ {4}([a-z][a-z0-9-]*)(?: {2,}|\n {5,})\S", listing, re.M)


def table_verbs(markdown: str) -> list[str]:
    """The verbs of the command table: rows whose first cell starts with `patchpack VERB`."""
    return re.findall(r"^\| `patchpack ([a-z][a-z0-9-]*)", markdown, re.M)


# -- the command table -------------------------------------------------------------------------


def test_the_command_table_lists_every_verb_of_the_cli() -> None:
    in_readme = table_verbs(section(README.read_text(encoding="utf-8"), "Commands"))
    in_cli = listed_verbs(help_text())
    assert len(in_readme) == len(set(in_readme)), f"a verb is listed twice: {in_readme}"
    assert set(in_readme) - set(in_cli) == set(), "the README lists verbs the CLI does not have"
    assert set(in_cli) - set(in_readme) == set(), "the README's command table misses CLI verbs"
    assert in_readme == in_cli, "list the verbs in the order `patchpack --help` does"


def usage_flags(text: str) -> set[str]:
    """The options a help's usage line lists (``--help`` aside)."""
    usage = text.split("\n\n", 1)[0]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", usage)) - {"--help"}


def page_part(page: str, command: str) -> str | None:
    """The part of docs/commands.md under the heading `` `patchpack COMMAND` ``."""
    heading = re.search(rf"^#+ `patchpack {re.escape(command)}`\n", page, re.M)
    if heading is None:
        return None
    rest = page[heading.end() :]
    following = re.search(r"^#+ `patchpack ", rest, re.M)
    return rest[: following.start()] if following else rest


def test_the_commands_page_names_every_verb_and_flag() -> None:
    page = (DOCS / "commands.md").read_text(encoding="utf-8")
    missing = []
    for verb in listed_verbs(help_text()):
        for command in [verb, *(f"{verb} {kind}" for kind in listed_verbs(help_text(verb)))]:
            part = page_part(page, command)
            flags = usage_flags(help_text(*command.split()))
            if part is None:
                missing.append(f"patchpack {command}")
            else:
                missing += [
                    f"patchpack {command} {f}" for f in sorted(flags) if f"`{f}" not in part
                ]
    assert missing == [], "docs/commands.md lacks these (see `patchpack VERB --help`)"


# -- the Python example --------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a small extracted dataset at ``data/patches``, made the current directory."""
    source = make_folder(tmp_path / "images")
    extract(small_params(source), out=tmp_path / "data" / "patches")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def python_example(path: Path, title: str | None = None) -> str:
    text = path.read_text(encoding="utf-8")
    blocks = code_blocks(section(text, title) if title else text, "python")
    assert len(blocks) == 1, f"{path.name}: expected one python block, found {len(blocks)}"
    return blocks[0]


def run_example(code: str, name: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, name, "exec"), namespace)
    return namespace


def test_the_python_example_runs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_example(python_example(README, "Python API"), "README.md (Python API)")
    images, labels = namespace["images"], namespace["labels"]
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8
    assert images.shape[1:] == (16, 16, 1)
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int32
    assert "['class_0', 'class_1', 'class_2'] (16, 16, 1)" in capsys.readouterr().out


def test_the_python_example_refuses_a_dataset_that_fails_verify(project: Path) -> None:
    # a valid HDF5 file with one pixel changed: every shard still opens, only verify can tell
    shard = sorted((project / "data" / "patches" / "train").glob("shard-*.h5"))[0]
    with h5py.File(shard, "r+") as h5:
        h5["images"][0, 0, 0, 0] = 255 - h5["images"][0, 0, 0, 0]
    with pytest.raises(IntegrityError, match="different pixels"):
        run_example(python_example(README, "Python API"), "README.md (Python API)")


def test_the_shard_reading_example_of_the_docs_runs(project: Path) -> None:
    namespace = run_example(python_example(DOCS / "format.md"), "docs/format.md")
    images = namespace["images"]
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8


# -- Setup, Testing and CI ----------------------------------------------------------------------


def readme_commands(title: str) -> list[list[str]]:
    """The commands of each shell block in the README's ``## title`` section."""
    blocks = code_blocks(section(README.read_text(encoding="utf-8"), title), "bash")
    return [commands(block) for block in blocks]


def test_setup_and_testing_run_the_documented_commands() -> None:
    assert readme_commands("Setup")[0] == [
        "pip install -e '.[all]' -c constraints.txt",
        "dvc repro",
    ]
    assert readme_commands("Testing")[0] == [
        "pip install -e '.[all,dev,jax,torch]' -c constraints.txt",
        "python -m pytest",
    ]


def test_ci_runs_the_readme_test_command_after_the_docs_build() -> None:
    ci = commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    test_command = readme_commands("Testing")[0][-1]
    assert test_command == "python -m pytest" and test_command in ci
    install = next(line for line in ci if "pip install" in line and " -e " in line)
    extras = re.search(r"\.\[([^\]]+)\]", install)
    assert extras, f"no extras in {install!r}"
    assert {"all", "dev", "docs", "jax", "torch"} <= set(extras.group(1).split(","))
    assert "-c constraints.txt" in install
    docs = next(i for i, line in enumerate(ci) if "mkdocs build --strict" in line)
    assert docs < ci.index(test_command)


# -- links and the docs site --------------------------------------------------------------------


def links(markdown: str) -> list[str]:
    """Link and image targets outside code blocks (and outside inline code)."""
    return LINK.findall(re.sub(r"`[^`\n]*`", "", without_code(markdown)))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_relative_link_of_the_readme_resolves() -> None:
    readme = README.read_text(encoding="utf-8")
    slugs = {github_slug(h) for h in re.findall(r"^#+ (.+)$", without_code(readme), re.M)}
    broken = []
    for target in links(readme):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in slugs:
                broken.append(target)
        elif not (ROOT / path).exists():
            broken.append(target)
    assert broken == []


def test_the_readme_links_every_docs_page() -> None:
    linked = {Path(t.partition("#")[0]) for t in links(README.read_text(encoding="utf-8"))}
    pages = {page.relative_to(ROOT) for page in DOCS.glob("*.md")}
    assert pages - linked == set(), "add these pages to the README's 'Read more'"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs built with ``mkdocs build --strict`` into a temporary folder."""
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' -c constraints.txt")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    return out


def built_page(site: Path, page: Path) -> Path:
    """Where mkdocs writes ``docs/NAME.md`` (directory URLs: ``NAME/index.html``)."""
    return site / "index.html" if page.stem == "index" else site / page.stem / "index.html"


def test_the_docs_build_strict(site: Path) -> None:
    unbuilt = [page.name for page in DOCS.glob("*.md") if not built_page(site, page).is_file()]
    assert unbuilt == []


def test_readme_anchors_into_the_docs_exist(site: Path) -> None:
    broken = []
    for target in links(README.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        if not (path.startswith("docs/") and path.endswith(".md") and anchor):
            continue
        if f'id="{anchor}"' not in built_page(site, Path(path)).read_text(encoding="utf-8"):
            broken.append(target)
    assert broken == [], "these README links point at headings the docs do not have"
