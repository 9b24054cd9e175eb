"""The manual is real: in README.md and every docs/ page, each ``bench`` command parses with the
options it shows, each relative link (and its #anchor) resolves, each repository path and
``cnnbench.`` name exists, and each Python example runs (or is a plugin that loads and trains).

Fenced blocks are found line by line (no Markdown library is installed; the pages use plain
```` ```lang ```` fences only). A Python block must be preceded by a marker comment saying how it is
tested: ``<!-- test: run -->`` (executed) or ``<!-- test: plugin NAME -->`` (written to NAME.py and
loaded as a plugin).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from support import BENCH, ROOT, make_registry

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARKER = "<!-- test: run -->"
PLUGIN_MARKER = re.compile(r"<!-- test: plugin (\w+) -->")
# bench options whose values are registry names (comma lists in `bench sweep`)
NAMED_OPTIONS = {
    "--model": "models", "--dataset": "datasets", "--augment": "augmentations", "--normalizer": "normalizers",
    "--loader": "loaders", "--target": "targets", "--launcher": "launchers",
}
REPO_PATH = re.compile(r"(?<![\w/.-])(?:harness|plugins|tests|examples|results|docs|\.ci)/[\w./-]*")
DOTTED_NAME = re.compile(r"(?<![\w.])cnnbench(?:\.\w+)+")
# homes for code not written yet, named in architecture.md's "Where new code goes"
FUTURE_NAMES = {"cnnbench.deploy"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str  # the HTML comment on the line before the fence, or ""
    text: str


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, start = [], None
    for i, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if start is None:
            start = i
            continue
        marker = lines[start - 1].strip() if start and lines[start - 1].startswith("<!--") else ""
        found.append(Block(page, start + 1, lines[start][3:].strip(), marker, "\n".join(lines[start + 1 : i])))
        start = None
    assert start is None, f"{page_id(page)}:{start + 1 if start is not None else 0}: unclosed code fence"
    return found


def prose_of(page: Path) -> str:
    """The page without its fenced blocks (headings and inline code outside them)."""
    text = page.read_text()
    for block in blocks_of(page):
        text = text.replace(block.text, "")
    return text


def all_blocks(lang: str) -> list[Block]:
    return [b for page in PAGES for b in blocks_of(page) if b.lang == lang]


def inline_code(page: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose_of(page))


# --- commands -------------------------------------------------------------------------------


def logical_lines(script: str) -> list[tuple[int, str]]:
    """(index of the first line, text) of each line, backslash continuations joined."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for i, line in enumerate(script.splitlines()):
        start, text = pending if pending else (i, "")
        text += line
        pending = (start, text[:-1] + " ") if line.endswith("\\") else None
        if pending is None:
            joined.append((start, text))
    return joined


def shell_commands(script: str) -> list[tuple[int, list[str]]]:
    """(line index, tokens) of each simple command of a shell snippet (comments, `&&`, `|`, `;` split off)."""
    commands: list[tuple[int, list[str]]] = []
    for i, line in logical_lines(script):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", "|", ";", "&"):
                if current:
                    commands.append((i, current))
                current = []
            else:
                current.append(token)
    return commands


def without_env(tokens: list[str]) -> list[str]:
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]
    return tokens


def bench_commands() -> list[tuple[str, list[str]]]:
    """(where, args after `bench`) for every `bench` command in a bash block of the manual."""
    found = []
    for block in all_blocks("bash"):
        for i, command in shell_commands(block.text):
            tokens = without_env(command)
            if tokens and (tokens[0] == "bench" or tokens[0].endswith("/bench")):
                found.append((f"{page_id(block.page)}:{block.line + 1 + i}: {shlex.join(tokens)}", tokens[1:]))
    return found


BENCH_COMMANDS = [pytest.param(where, args, id=where) for where, args in bench_commands()]


def split_global_options(args: list[str]) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """`bench`'s own options (``--plugin``, ``--no-plugin``) apart from the subcommand and its args."""
    from cnnbench.cli import main

    by_opt = {opt: p for p in main.params for opt in p.opts}
    values: dict[str, list[str]] = {p.name: [] for p in main.params if p.name}
    while args and args[0].startswith("-"):
        param = by_opt.get(args[0])
        assert param is not None and param.name, f"bench has no option {args[0]}"
        values[param.name].append(args[1])
        args = args[2:]
    return {k: tuple(v) for k, v in values.items()}, args


def parse_bench(args: list[str]) -> click.Context:
    """Parse the command as `bench` would, without running it; a bad option or value raises."""
    from cnnbench.cli import main

    options, rest = split_global_options(args)
    assert rest, "no subcommand"
    root = click.Context(main, info_name="bench")
    root.params = {"plugins": (), "blocked": options.get("blocked", ())}  # plugins' names aside: syntax only
    command = main.get_command(root, rest[0])
    assert command is not None, f"bench has no command {rest[0]!r}"
    return command.make_context(rest[0], rest[1:], parent=root)


def check_names(args: list[str]) -> None:
    """Registry names a command shows (models, loaders ...) are registered."""
    from cnnbench.registry import get_registry

    registry = get_registry()
    for option, value in zip(args, args[1:], strict=False):
        kind = NAMED_OPTIONS.get(option)
        if kind is None or re.search(r"[*?\[]", value):
            continue
        for name in value.split(","):
            assert name in registry.entries(kind), f"{option} {name}: no such {kind[:-1]}"


def test_the_manual_shows_bench_commands():
    commands = bench_commands()
    assert len(commands) > 50, [where for where, _ in commands]
    assert {page_id(p) for p in PAGES} >= {"README.md", "docs/running.md", "docs/sweeps.md", "docs/plugins.md"}


@pytest.mark.parametrize(("where", "args"), BENCH_COMMANDS)
def test_every_bench_command_in_the_manual_parses(where, args):
    try:
        parse_bench(args)
    except click.exceptions.Exit:  # --help
        return
    except (click.ClickException, AssertionError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        pytest.fail(f"{where}\n  -> {message}", pytrace=False)
    if "--plugin" not in args:  # a plugin's own names (a model `tiny`) are not registered here
        check_names(args)


def test_a_wrong_command_in_the_manual_would_be_caught():
    for bad in (["run", "--model", "mnist_gap", "--epoch", "2"], ["run", "--precision", "fp8"], ["leaderbord"],
                ["show"], ["--no-plugin"]):
        with pytest.raises((click.ClickException, AssertionError, IndexError)):
            parse_bench(bad)
    parse_bench(["sweep", "--model", "mnist_gap,no_such_model"])
    with pytest.raises(AssertionError, match="no_such_model"):
        check_names(["sweep", "--model", "mnist_gap,no_such_model"])


def test_shell_snippets_split_into_commands():
    script = ("bash .ci/install && .venv/bin/bench run --model m   # install\n"
              "bench show R | bench plot R \\\n  --x 1\nA=1 bench list")
    assert shell_commands(script) == [
        (0, ["bash", ".ci/install"]), (0, [".venv/bin/bench", "run", "--model", "m"]), (1, ["bench", "show", "R"]),
        (1, ["bench", "plot", "R", "--x", "1"]), (3, ["A=1", "bench", "list"]),
    ]
    assert without_env(["A=1", "B=", "bench", "list"]) == ["bench", "list"]


# --- links, paths, names -------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose_of(page), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def links_of(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", prose_of(page))


def test_slugs_are_githubs():
    assert slug("The leaderboard's rule") == "the-leaderboards-rule"
    assert slug("Step speed (`bench speed`)") == "step-speed-bench-speed"
    assert slug("Upgrading a plugin written for 0.1") == "upgrading-a-plugin-written-for-01"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = []
    for link in links_of(page):
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or ROOT not in target.parents and target != ROOT:
            broken.append(f"{link}: no such file")
        elif anchor and (target.suffix != ".md" or anchor not in anchors_of(target)):
            broken.append(f"{link}: no heading #{anchor} in {page_id(target)}")
    assert not broken, f"{page_id(page)}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_repository_path_named_exists(page):
    texts = inline_code(page) + [b.text for b in blocks_of(page) if b.lang == "bash"]
    paths = {m for text in texts for m in REPO_PATH.findall(text) if not re.search(r"[<>*{]", m)}
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/.")).exists())
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


def resolves(name: str) -> bool:
    """``cnnbench.a.b.c``: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            try:
                obj = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name is None or not f"{module}.".startswith(f"{exc.name}."):
                    raise  # the module exists and imports what does not: show why
                continue
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_cnnbench_name_exists(page):
    names = {m for text in inline_code(page) for m in DOTTED_NAME.findall(text)}
    names |= {m for b in blocks_of(page) if b.lang == "python" for m in DOTTED_NAME.findall(b.text)}
    missing = sorted(n for n in names - FUTURE_NAMES if not resolves(n))
    assert not missing, f"{page_id(page)} names what cnnbench does not have: {missing}"


def test_a_missing_name_or_path_would_be_caught():
    assert resolves("cnnbench.files.write_atomic") and resolves("cnnbench.hookimpl")
    assert not resolves("cnnbench.files.write_atomically") and not resolves("cnnbench.nothing.here")
    assert not (ROOT / "harness/no_such_module.py").exists()


# --- Python examples -------------------------------------------------------------------------


def test_every_python_block_says_how_it_is_tested():
    unmarked = [f"{page_id(b.page)}:{b.line}" for b in all_blocks("python")
                if b.marker != RUN_MARKER and not PLUGIN_MARKER.fullmatch(b.marker)]
    assert not unmarked, f"python blocks without a '{RUN_MARKER}' or '<!-- test: plugin NAME -->' line: {unmarked}"


RUNNABLE = [b for b in all_blocks("python") if b.marker == RUN_MARKER]


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: f"{page_id(b.page)}:{b.line}")
def test_every_runnable_example_runs(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(block.text, f"{page_id(block.page)}:{block.line}", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip(), "a runnable example prints what it shows"


def plugin_example(name: str) -> str:
    [block] = [b for b in all_blocks("python") if b.marker == f"<!-- test: plugin {name} -->"]
    return block.text


def test_plugin_guide_example_is_short_and_imports_only_cnnbench(tmp_path, monkeypatch):
    code = plugin_example("my_nets")
    assert len(code.strip().splitlines()) < 25
    imports = re.findall(r"^\s*from (\S+) import", code, re.M)
    assert imports and all(m.split(".")[0] in ("cnnbench", "torch") for m in imports), imports
    tree = ast.parse(code)
    nested = [n for f in tree.body if isinstance(f, ast.FunctionDef) for n in ast.walk(f)
              if isinstance(n, ast.ImportFrom)]
    lines = code.splitlines()
    assert nested and all("# lazy: " in lines[n.lineno - 1] for n in nested), "imports in functions say why"
    (tmp_path / "my_nets.py").write_text(code)
    monkeypatch.chdir(tmp_path)  # `--plugin my_nets` from the folder holding my_nets.py
    try:
        registry = make_registry("my_nets", blocked=("console",))
        spec = registry.model("tiny")
        model = registry.create_model("tiny")
        assert sum(p.numel() for p in model.parameters()) == spec.params
        hooks = registry.pm.hook.cnnbench_epoch_end.get_hookimpls()
        assert [impl.plugin_name for impl in hooks] == ["my_nets"]
    finally:
        sys.modules.pop("my_nets", None)


def test_plugin_guide_example_runs_from_its_folder(tmp_path, data_dir):
    (tmp_path / "my_nets.py").write_text(plugin_example("my_nets"))
    result = subprocess.run(
        [str(BENCH), "--plugin", "my_nets", "run", "--model", "tiny", "--epochs", "1", "--limit-train", "512",
         "--limit-test", "128", "--data-dir", str(data_dir), "--results-dir", "r", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr  # the guide's plugin is up to date
    [path] = (tmp_path / "r").glob("*.json")
    record = json.loads(path.read_text())
    assert record["model"] == "tiny" and record["params"] == 1_442
    assert record["plugins"]["model"]["plugin"] == "my_nets" and record["plugins"]["model"]["distribution"] is None
    assert record["plugins"]["dataset"] == {
        "plugin": "mnist", "module": "cnnbench.plugins.mnist", "distribution": "cnnbench",
        "version": record["versions"]["cnnbench"],
    }


# --- pages that mirror the code ------------------------------------------------------------------


def hook_table() -> dict[str, tuple[str, str]]:
    """docs/plugins.md's hook table: hook -> (added, changed)."""
    rows = re.findall(r"^\| `(cnnbench_\w+)\(.*?\)` \|.*\|\s*([\d.]*)\s*\|\s*([\d., ]*?)\s*\|$",
                      (ROOT / "docs" / "plugins.md").read_text(), re.M)
    return {name: (added, changed) for name, added, changed in rows}


def test_the_hook_table_matches_the_hookspecs():
    from cnnbench import hookspecs

    specs = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("cnnbench_") and callable(fn)}
    documented = {}
    for name, fn in specs.items():
        doc = fn.__doc__ or ""
        added = re.findall(r"versionadded:: ([\d.]+)", doc)
        changed = re.findall(r"versionchanged:: ([\d.]+)", doc)
        documented[name] = (added[0] if added else "", ", ".join(changed))
    assert hook_table() == documented


def tree_block() -> str:
    page = ROOT / "docs" / "architecture.md"
    return next(b.text for b in blocks_of(page) if b.text.startswith("harness/ (cnnbench)"))


def listed_modules(entry: str) -> set[str]:
    """``"plan train (x, y), templates/ (Jinja2)"`` -> {"plan", "train", "templates/"}."""
    return set(re.sub(r"\([^)]*\)", " ", entry).replace(",", " ").split())


def package_contents(folder: Path) -> set[str]:
    modules = {p.stem for p in folder.glob("*.py")}
    folders = {f"{p.name}/" for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"}
    return modules | folders


def test_the_architecture_tree_is_the_package():
    tree = {}
    for line in tree_block().splitlines():
        if line.startswith("harness/"):
            tree["harness/"] = listed_modules(line.removeprefix("harness/ (cnnbench)"))
        elif line.startswith("  "):
            folder, _, entry = line.strip().partition(" ")
            tree[folder] = listed_modules(entry)
    harness = ROOT / "harness"
    subpackages = {f"{p.name}/" for p in harness.iterdir() if (p / "__init__.py").is_file()}
    assert set(tree) - {"harness/"} == subpackages
    assert tree["harness/"] | subpackages == package_contents(harness) - {"__pycache__/"}
    for folder in subpackages:
        assert tree[folder] | {"__init__"} == package_contents(harness / folder) | {"__init__"}, folder


def test_the_architecture_page_names_every_built_in_plugin():
    from cnnbench.registry import DEFAULT_PLUGINS

    named = set(inline_code(ROOT / "docs" / "architecture.md"))
    assert set(DEFAULT_PLUGINS) <= named, set(DEFAULT_PLUGINS) - named


def test_the_targets_table_lists_every_target():
    from cnnbench.registry import get_registry

    rows = re.findall(r"^\| `([\w.-]+)` \| (\w+) \|", (ROOT / "docs" / "recipes.md").read_text(), re.M)
    registered = {t.id: t.dataset for t in get_registry().targets()}
    assert dict(rows) == registered


def test_the_dependency_rule_shown_is_the_one_tested():
    from test_architecture import LAYERS  # the rule tests/test_architecture.py holds over every module

    page = (ROOT / "docs" / "architecture.md").read_text()
    [rule] = [line for line in page.splitlines() if line.startswith("cnnbench.cli  ->")]
    shown = [part.split()[0].removeprefix("cnnbench.") for part in rule.split("->")]
    assert shown == list(reversed(LAYERS))
