"""The README's plugin example is real: it imports only cnnbench, registers, builds, and runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support import BENCH, ROOT, make_registry


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    return "# my_nets.py" + text.split("# my_nets.py", 1)[1].split("```", 1)[0]


def test_readme_plugin_example(tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) < 25
    imports = re.findall(r"^\s*from (\S+) import", code, re.M)
    assert imports and all(m.split(".")[0] in ("cnnbench", "torch") for m in imports), imports
    (tmp_path / "my_nets.py").write_text(code)
    monkeypatch.chdir(tmp_path)  # `--plugin my_nets` from the folder holding my_nets.py
    registry = make_registry("my_nets", blocked=("console",))
    spec = registry.model("tiny")
    model = registry.create_model("tiny")
    assert sum(p.numel() for p in model.parameters()) == spec.params
    assert [impl.plugin_name for impl in registry.pm.hook.cnnbench_epoch_end.get_hookimpls()] == ["my_nets"]
    sys.modules.pop("my_nets", None)


def test_readme_plugin_example_runs_from_its_folder(tmp_path, data_dir):
    (tmp_path / "my_nets.py").write_text(readme_example())
    result = subprocess.run(
        [str(BENCH), "--plugin", "my_nets", "run", "--model", "tiny", "--epochs", "1", "--limit-train", "512",
         "--limit-test", "128", "--data-dir", str(data_dir), "--results-dir", "r", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [path] = (tmp_path / "r").glob("*.json")
    record = json.loads(path.read_text())
    assert record["model"] == "tiny" and record["params"] == 1_442
    assert record["plugins"]["model"]["plugin"] == "my_nets" and record["plugins"]["model"]["distribution"] is None
    assert record["plugins"]["dataset"] == {
        "plugin": "mnist", "module": "cnnbench.plugins.mnist", "distribution": "cnnbench",
        "version": record["versions"]["cnnbench"],
    }


def test_readme_first_lines_are_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert block[0].startswith("bash .ci/install && .venv/bin/bench run --model mnist_gap")
    assert block[1].startswith(".venv/bin/python -m pytest")
    assert ".venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()
