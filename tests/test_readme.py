"""The README is a front door: the two commands first, the commands people use, the leaderboard's
rule, links to every page of the manual in docs/, and the generated leaderboard at the end.

What the README and the docs/ pages show (commands, links, paths, examples) is checked for all of
them by tests/test_docs.py.
"""

from __future__ import annotations

import re

from support import ROOT

README = ROOT / "README.md"
START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def front_matter() -> str:
    """The README above the generated leaderboard."""
    return README.read_text().split(START, 1)[0]


def test_readme_first_lines_are_the_two_commands():
    lines = README.read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert lines.index("```bash") <= 3, "the two commands come first"
    assert block[0].startswith("bash .ci/install && .venv/bin/bench run --model mnist_gap")
    assert block[1].startswith(".venv/bin/python -m pytest")
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_every_page_of_the_manual():
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)[#)]", front_matter()))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages and pages == linked, f"pages not linked from the README: {pages - linked}"


def test_readme_is_a_front_door_not_the_manual():
    text = front_matter()
    assert len(text.splitlines()) <= 100, "move the details into docs/"
    for heading in ("## The commands you will use", "## The leaderboard's rule", "## The manual"):
        assert heading in text
    assert "## Leaderboard" in text.splitlines()[-3:], "the generated leaderboard has its own heading"


def test_readme_ends_with_the_generated_leaderboard_between_its_markers():
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert text.index(START) < text.index(END)
    assert text.rstrip().endswith(END), "nothing after the generated section"
