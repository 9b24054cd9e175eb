"""The plugin API's contract: hooks called through pluggy, its version, compatibility with API 0.1,
essential built-ins, and errors by kind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest
from support import BENCH, make_registry

import cnnbench
from cnnbench import deprecated
from cnnbench.errors import BenchError, DataError, PluginError, RecordError, UsageError
from cnnbench.hookspecs import API_VERSION, parse_api_version
from cnnbench.registry import ESSENTIAL_PLUGINS, Registry, make_plugin_manager


def write_plugin(folder, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_registration_hooks_go_through_pluggy_so_wrappers_and_tracing_see_them(plugin_dir):
    write_plugin(plugin_dir, "wrapping_plugin", """
        from cnnbench import hookimpl
        SEEN = []

        @hookimpl(wrapper=True)
        def cnnbench_models():
            result = yield
            SEEN.append(len(result))
            return result
    """)
    pm = make_plugin_manager(["wrapping_plugin"])
    traced: list[str] = []
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name), lambda *a: None)
    try:
        models = Registry(pm).entries("models")
    finally:
        undo()
    import wrapping_plugin

    assert "mnist_gap" in models
    assert wrapping_plugin.SEEN and all(n == 1 for n in wrapping_plugin.SEEN)  # one call per plugin
    assert traced.count("cnnbench_models") == len(wrapping_plugin.SEEN)


def test_a_registration_result_that_is_not_a_list_names_the_plugin(plugin_dir):
    write_plugin(plugin_dir, "string_models", """
        from cnnbench import hookimpl

        @hookimpl
        def cnnbench_models():
            return "mnist_gap"
    """)
    with pytest.raises(PluginError, match="plugin 'string_models' returned str from cnnbench_models; expected a list"):
        make_registry("string_models").entries("models")


@pytest.mark.parametrize("name", sorted(ESSENTIAL_PLUGINS))
def test_essential_builtins_cannot_be_blocked(name):
    result = subprocess.run([str(BENCH), "--no-plugin", name, "list", "models"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --no-plugin {name}: a built-in that cannot be switched off")


def test_blocking_the_console_still_works():
    result = subprocess.run([str(BENCH), "--no-plugin", "console", "list", "plugins"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "console" not in result.stdout.split()


def test_api_version_is_major_minor():
    assert parse_api_version(cnnbench.API_VERSION) == parse_api_version(API_VERSION) >= (1, 0)
    for bad in ("1", "1.x", "", "v1.0", "1.0.0"):
        with pytest.raises(ValueError):
            parse_api_version(bad)


@pytest.mark.parametrize("wanted", ["1.0", API_VERSION])
def test_a_plugin_needing_this_api_loads(plugin_dir, wanted):
    name = write_plugin(plugin_dir, f"needs_current_{wanted.replace('.', '_')}", f"CNNBENCH_API = {wanted!r}\n")
    make_plugin_manager([name])


@pytest.mark.parametrize("wanted", ["9.0", f"{parse_api_version(API_VERSION)[0]}.99"])
def test_a_plugin_needing_a_newer_api_is_refused_in_one_line(plugin_dir, wanted):
    name = write_plugin(plugin_dir, f"needs_newer_{wanted.replace('.', '_')}", f"CNNBENCH_API = {wanted!r}\n")
    with pytest.raises(PluginError) as err:
        make_plugin_manager([name])
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"plugin {name!r} needs cnnbench plugin API {wanted}, this cnnbench has "
                       f"{API_VERSION}: upgrade cnnbench")


def test_a_malformed_api_declaration_is_one_line(plugin_dir):
    write_plugin(plugin_dir, "needs_garbage", "CNNBENCH_API = 'latest'\n")
    with pytest.raises(PluginError, match="declares CNNBENCH_API = 'latest'; expected a version like"):
        make_plugin_manager(["needs_garbage"])


def test_a_plugin_declaring_api_0_1_warns(plugin_dir):
    write_plugin(plugin_dir, "needs_old", "CNNBENCH_API = '0.1'\n")
    with pytest.warns(deprecated.CnnbenchDeprecationWarning, match="plugin 'needs_old' declares CNNBENCH_API"):
        make_plugin_manager(["needs_old"])


OLD_PLUGIN = """
    from harness import hookimpl

    @hookimpl
    def cnnbench_run_start(run):
        print("old plugin saw", run["model"], run.get("seed"))

    @hookimpl
    def cnnbench_epoch_end(run, epoch):
        print("old plugin epoch", epoch["epoch"], round(epoch["test_acc"], 4))
"""


def test_a_plugin_written_for_api_0_1_works_with_deprecation_warnings(plugin_dir, data_dir, tmp_path):
    """``from harness import hookimpl`` and dict-reading lifecycle hooks: the run works, and bench says
    (one ``warning:`` line each) what to change."""
    write_plugin(plugin_dir, "old_style_plugin", OLD_PLUGIN)
    results = tmp_path / "results"
    result = subprocess.run(
        [str(BENCH), "--plugin", "old_style_plugin", "run", "--model", "mnist_gap", "--epochs", "1",
         "--limit-train", "256", "--limit-test", "256", "--no-progress", "--no-weights",
         "--data-dir", str(data_dir), "--results-dir", str(results)],
        cwd=plugin_dir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "old plugin saw mnist_gap 0" in result.stdout
    assert "old plugin epoch 1 " in result.stdout
    warnings_shown = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("import harness is the old name of cnnbench; import cnnbench" in w for w in warnings_shown)
    assert any("RunInfo['model']" in w and "use .model" in w for w in warnings_shown)
    assert any("EpochStats['test_acc']" in w for w in warnings_shown)
    assert all("removed in cnnbench 0.3" in w for w in warnings_shown)
    assert len(list(results.glob("*.json"))) == 1


def test_old_module_paths_are_aliases_with_a_warning():
    with pytest.warns(deprecated.CnnbenchDeprecationWarning, match="cnnbench.train is the old name"):
        sys.modules.pop("cnnbench.train", None)
        import cnnbench.train as old
    import cnnbench.training.train as new

    assert old is new
    sys.modules.pop("cnnbench.train", None)
    with pytest.warns(deprecated.CnnbenchDeprecationWarning, match="cnnbench.sweep.expand moved"):
        import cnnbench.sweep

        assert callable(cnnbench.sweep.expand)


def test_dict_access_on_run_data_warns_and_maps_to_attributes():
    from cnnbench.runrecord import EpochStats

    stats = EpochStats(1, 0.5, 0.9, 0.4, 0.91, 0.1, 2.0)
    with pytest.warns(deprecated.CnnbenchDeprecationWarning):
        assert stats["test_acc"] == stats.test_acc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyError):
            stats["nope"]
        assert stats.get("nope", 7) == 7


def test_errors_have_kinds_under_one_rule():
    for kind in (UsageError, DataError, PluginError, RecordError):
        assert issubclass(kind, BenchError)
    with pytest.raises(UsageError):
        make_registry().model("no_such_model")
    with pytest.raises(PluginError, match="failed to import"):
        make_plugin_manager(["broken_import"])


@pytest.mark.parametrize(("old", "new"), sorted(deprecated.OLD_SWEEP_OPTIONS.items()))
def test_old_sweep_option_names_still_work_with_a_warning(old, new):
    with pytest.warns(deprecated.CnnbenchDeprecationWarning):
        assert deprecated.rename_old_sweep_options(["--model", "x", f"{old}=2"]) == ["--model", "x", f"{new}=2"]
    with pytest.warns(deprecated.CnnbenchDeprecationWarning, match=f"bench sweep {old} is now {new}"):
        assert deprecated.rename_old_sweep_options([old, "2"]) == [new, "2"]


def test_bench_sweep_says_an_old_option_is_deprecated_in_one_line(tmp_path):
    result = subprocess.run([str(BENCH), "sweep", "--model", "mnist_gap", "--jobs-per-gpu", "2", "--dry-run",
                             "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "warning: bench sweep --jobs-per-gpu is now --local-jobs-per-gpu (an option of its launcher); "
        "use --local-jobs-per-gpu (deprecated; removed in cnnbench 0.3)"]
