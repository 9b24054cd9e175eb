"""The README's plugin example is real: it registers, builds, and is under 25 lines."""

from __future__ import annotations

import sys

from support import ROOT, make_registry


def test_readme_plugin_example(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = "# my_nets.py" + text.split("# my_nets.py", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) < 25
    (tmp_path / "my_nets.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = make_registry("my_nets")
    spec = registry.model("tiny")
    model = registry.create_model("tiny")
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert [impl.plugin_name for impl in registry.pm.hook.cnnbench_epoch_end.get_hookimpls()] == ["my_nets"]
    sys.modules.pop("my_nets", None)


def test_readme_first_lines_are_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert block[0].startswith("bash .ci/install && .venv/bin/bench run --model mnist_gap")
    assert block[1].startswith(".venv/bin/python -m pytest")
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
