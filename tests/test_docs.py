"""The docs cannot rot: every page's commands run, every link resolves, the layer picture is the code's.

Convention (docs/development.md, "The docs are tested"):
- a ```console block holds commands after `$ `; the lines after a command show what it prints
  (each must be a line of its output; a line with an ellipsis matches up to it); a shown `error:`
  line means exit status 2, `# exit N` after a command says N, otherwise 0;
- `<!-- file: NAME -->` before a fenced block writes the block to NAME in the docs' folder;
- `<!-- not run: REASON -->` before a block skips it; a ```bash / ```sh block must carry it.
All pages run in one temporary folder, in order within a page, so a later page's identical smoke
run finds its run done.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

from tests.cli_server import run_bench

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("harness", "tasks", "trainers", "reports")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,})(?P<lang>[\w-]*)\s*$")
MARK = re.compile(r"^\s*<!--\s*(?P<kind>not run|file):\s*(?P<value>.*?)\s*-->\s*$")
SHELL_LANGS = frozenset({"bash", "sh", "shell"})
ELLIPSES = ("...", "…")
SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~]|^\w+=")  # what only bash can run
COMMAND_TIMEOUT_S = 300
TIMINGS: list[tuple[float, str]] = []  # (seconds, command): what the docs' commands cost


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    mark: tuple[str, str] | None  # ("not run", reason) or ("file", name)


@dataclass
class Command:
    line: str
    shown: list[str] = field(default_factory=list)

    @property
    def expected_status(self) -> int:
        declared = re.search(r"#\s*exit\s+(\d+)\s*$", self.line)
        if declared:
            return int(declared.group(1))
        return 2 if any(shown.startswith("error:") for shown in self.shown) else 0


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        ticks, indent = opening.group("ticks"), len(opening.group("indent"))
        end = index + 1
        while end < len(lines) and not re.match(rf"^\s*{ticks}`*\s*$", lines[end]):
            end += 1
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[index + 1 : end])
        before = next((lines[k] for k in range(index - 1, -1, -1) if lines[k].strip()), "")
        marked = MARK.match(before)
        mark = (marked.group("kind"), marked.group("value")) if marked else None
        blocks.append(Block(opening.group("lang"), body, index + 1, mark))
        index = end + 1
    return blocks


def console_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    continuing = False  # the last command line ended with a backslash
    for line in text.splitlines():
        if continuing:
            commands[-1].line = commands[-1].line[:-1].rstrip() + " " + line.strip()
        elif line.startswith("$ "):
            commands.append(Command(line[2:].strip()))
        elif commands and line.strip():
            commands[-1].shown.append(line.rstrip())
            continue
        continuing = commands[-1].line.endswith("\\") if commands else False
    return commands


def steps(page: Path) -> Iterator[tuple[str, object, int]]:
    """("file", (name, text), line) and ("run", Command, line), in the page's order."""
    for block in fenced_blocks(page):
        if block.mark and block.mark[0] == "not run":
            continue
        if block.mark and block.mark[0] == "file":
            yield "file", (block.mark[1], block.text + "\n"), block.line
        elif block.lang == "console":
            for command in console_commands(block.text):
                yield "run", command, block.line


def is_plain_bench(command: str) -> bool:
    """`bench ARGS` that needs no shell: quoting aside, no operators, variables, globs or env prefix."""
    without_comment = shlex.split(command, comments=True)
    return (
        bool(without_comment)
        and without_comment[0] == "bench"
        and not SHELL_SYNTAX.search(shlex.join(without_comment[1:]).replace("'", ""))
    )


def output_matches(shown: str, printed: list[str]) -> bool:
    cut = min((shown.index(mark) for mark in ELLIPSES if mark in shown), default=None)
    if cut is None:
        return shown.rstrip() in printed
    prefix = shown[:cut].rstrip()
    return not prefix or any(line.startswith(prefix) for line in printed)


# ---------------------------------------------------------------- running the pages' commands


@pytest.fixture(scope="session")
def docs_env(bench_cache: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PLASTICITY_BENCH_CACHE": str(bench_cache),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",  # no doc command that runs needs the network (those that do are marked not run)
        "HF_DATASETS_OFFLINE": "1",
    }


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs-commands")


def run_command(command: Command, folder: Path, env: dict[str, str]) -> tuple[int, str, str]:
    if is_plain_bench(command.line):  # forked from a process that imported torch & co. once (tests/cli_server.py)
        done = run_bench(
            *shlex.split(command.line, comments=True)[1:],
            env=env,
            cwd=folder,
            timeout=COMMAND_TIMEOUT_S,
            entry="script",
        )
        return done.returncode, done.stdout, done.stderr
    done = subprocess.run(
        ["bash", "-c", command.line],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    # bash runs a lone command in its own process: a signal's death reads as a shell shows it, 128 + N
    status = 128 - done.returncode if done.returncode < 0 else done.returncode
    return status, done.stdout, done.stderr


RUN_PAGES = [page for page in PAGES if any(kind == "run" for kind, _, _ in steps(page))]


@pytest.mark.e2e
@pytest.mark.xdist_group("docs")  # one folder for all pages: never two pages at once
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_page_commands_run_as_shown(page: Path, docs_folder: Path, docs_env: dict[str, str]) -> None:
    name = page.relative_to(ROOT)
    for kind, step, line in steps(page):
        if kind == "file":
            file_name, text = step  # type: ignore[misc]
            (docs_folder / file_name).parent.mkdir(parents=True, exist_ok=True)
            (docs_folder / file_name).write_text(text)
            continue
        assert isinstance(step, Command)
        started = time.perf_counter()
        code, out, err = run_command(step, docs_folder, docs_env)
        TIMINGS.append((time.perf_counter() - started, f"{name}:{line}: {step.line}"))
        where = f"{name}:{line}: $ {step.line}"
        assert code == step.expected_status, f"{where}\nexit {code}, expected {step.expected_status}\n{out}\n{err}"
        printed = [text.rstrip() for text in (out + "\n" + err).splitlines()]
        for shown in step.shown:
            assert output_matches(shown, printed), f"{where}\nshown but not printed: {shown!r}\n{out}\n{err}"


def test_shell_blocks_are_console_or_marked_not_run() -> None:
    unmarked = [
        f"{page.relative_to(ROOT)}:{block.line}"
        for page in PAGES
        for block in fenced_blocks(page)
        if block.lang in SHELL_LANGS and not (block.mark and block.mark[0] == "not run" and block.mark[1])
    ]
    assert not unmarked, f"write these as ```console blocks, or mark them <!-- not run: REASON -->: {unmarked}"


@pytest.mark.e2e
def test_the_bench_script_is_the_entry_point() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "bench"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "run" in done.stdout, done.stderr


# ---------------------------------------------------------------- links


def without_code_blocks(page: Path) -> str:
    """The page's text outside fenced blocks (inline code kept)."""
    kept, fenced = [], None
    for line in page.read_text().splitlines():
        opening = FENCE.match(line)
        if fenced is None and opening:
            fenced = opening.group("ticks")
        elif fenced is not None and re.match(rf"^\s*{fenced}`*\s*$", line):
            fenced = None
        elif fenced is None:
            kept.append(line)
    return "\n".join(kept)


def without_code(page: Path) -> str:
    """The page's text outside fenced blocks and inline code."""
    return re.sub(r"(`+).*?\1", "", without_code_blocks(page))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    fenced = None
    for line in page.read_text().splitlines():
        opening = FENCE.match(line)
        if fenced is None and opening:
            fenced = opening.group("ticks")
            continue
        if fenced is not None:
            fenced = None if re.match(rf"^\s*{fenced}`*\s*$", line) else fenced
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", without_code(page))
    return [target for target in targets if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {os.path.relpath(file, ROOT)})")
    assert not broken, f"{os.path.relpath(page, ROOT)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = ROOT / "README.md"
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in relative_links(readme)}
    missing = [page.relative_to(ROOT).as_posix() for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link: {missing}"


# ---------------------------------------------------------------- the README's layer picture and table


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    following = re.search(r"\n#{1,3} ", text[start + len(heading) + 2 :])
    return text[start : start + len(heading) + 2 + following.start()] if following else text[start:]


def layer_picture() -> list[str]:
    section = readme_section("### Layers")
    return section.split("\n```\n", 1)[1].split("\n```", 1)[0].splitlines()


def is_package_path(token: str) -> bool:
    return token.split("/")[0] in PACKAGES


def picture_layers() -> list[list[tuple[str, list[str]]]]:
    """Each layer: its cells, each (path, the lines that describe it)."""
    layers: list[list[tuple[str, list[str]]]] = []
    for line in layer_picture():
        cells = [cell.strip() for cell in line.split("│")]
        first = cells[0].split()[0] if cells[0] else ""
        if not line[:1].isspace() and is_package_path(first):
            layers.append([(cell.split()[0], [" ".join(cell.split()[1:])]) for cell in cells if cell])
        elif layers and line.strip().strip("│").strip():
            for index, cell in enumerate(cells):
                if cell and index < len(layers[-1]):
                    layers[-1][index][1].append(cell)
                elif cell and len(layers[-1]) == 1:
                    layers[-1][0][1].append(cell)
    return layers


def test_layer_picture_follows_the_import_contract() -> None:
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contract if "plasticity_bench.harness.core" in c.get("layers", ()))["layers"]
    expected = [
        sorted(part.strip().removeprefix("plasticity_bench.").replace(".", "/") for part in layer.split("|"))
        for layer in layers
    ]
    drawn = [sorted(path for path, _ in layer) for layer in picture_layers()]
    assert drawn == expected, f"README's layer picture {drawn} is not the import-linter contract's {expected}"


def expand(path: str) -> list[str]:
    braces = re.search(r"\{([^{}]*)\}", path)
    if not braces:
        return [path]
    return [
        p
        for option in braces.group(1).split(",")
        for p in expand(path[: braces.start()] + option + path[braces.end() :])
    ]


def must_exist(path: str) -> Path:
    """The path itself, or for a NAME placeholder the folder that would hold it."""
    path = path.split(":")[0].rstrip("/")
    if "NAME" in path:
        path = path.split("NAME")[0].rstrip("/")
    return ROOT / path


def test_layer_picture_names_only_paths_that_exist() -> None:
    named: list[str] = []
    for layer in picture_layers():
        for path, descriptions in layer:
            named.append(path)
            # file and folder names on a cell's lines are inside its folder
            for token in re.findall(r"[\w{},/-]+(?:\.py|/)(?=[\s,;)]|$)", " ".join(descriptions)):
                named.extend(f"{path}/{name}" for name in expand(token))
    missing = [p for p in named if not must_exist(p).exists()]
    assert named and not missing, f"README's layer picture names what does not exist: {missing}"


def test_where_a_new_thing_goes_names_only_paths_that_exist() -> None:
    table = readme_section("### Where a new thing goes")
    named = [
        expanded
        for token in re.findall(r"`([^`\s]+)`", table)
        if is_package_path(token) and "/" in token
        for expanded in expand(token)
    ]
    missing = [p for p in named if not must_exist(p).exists()]
    assert len(named) >= 10 and not missing, f"README's 'where a new thing goes' names what does not exist: {missing}"


@pytest.fixture(scope="session", autouse=True)
def report_command_timings() -> Iterator[None]:
    yield
    if TIMINGS and os.environ.get("DOCS_TIMINGS"):
        for seconds, command in sorted(TIMINGS, reverse=True):
            print(f"{seconds:6.1f} s  {command}", file=sys.stderr)


REPO_PATH = re.compile(r"`((?:harness|tasks|trainers|reports|tests|benchmarks|scripts|docs)/[\w./{}-]*)(?::\w+)?`")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_repository_paths_named_in_prose_exist(page: Path) -> None:
    """`harness/app/config.py`, `tasks/suites/` and the like, in the text: a moved file shows here."""
    named = {expanded for token in REPO_PATH.findall(without_code_blocks(page)) for expanded in expand(token)}
    missing = sorted(path for path in named if not must_exist(path).exists())
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.slow  # imports the packages the snippets name (seconds)
def test_python_snippets_parse_and_import_what_exists() -> None:
    """Every ```python block parses, and each `from plasticity_bench.X import name` names a real one."""
    problems = []
    for page in PAGES:
        for block in fenced_blocks(page):
            if block.lang != "python":
                continue
            where = f"{page.relative_to(ROOT)}:{block.line}"
            try:
                tree = ast.parse(block.text)
            except SyntaxError as error:
                problems.append(f"{where}: {error}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "plasticity_bench":
                    module = importlib.import_module(node.module or "")
                    problems += [f"{where}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
                elif isinstance(node, ast.Import):
                    problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PACKAGES]
    assert not problems, f"snippets that name what does not exist (or a bare package name): {problems}"
