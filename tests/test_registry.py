"""Plugin discovery, the registry and its error paths."""

from __future__ import annotations

import pytest
from support import make_registry

from cnnbench.errors import BenchError, PluginError, UsageError
from cnnbench.records import ModelSpec

BUILTIN_PLUGINS = {"mnist", "mnist_models", "normalizers", "augment_rotation", "loaders", "targets"}


def test_builtins_are_registered_from_the_default_tuple(registry):
    names = {name for name, _ in registry.plugins()}
    assert BUILTIN_PLUGINS <= names


def test_every_registration_hook_returns_typed_records(registry):
    for kind in ("datasets", "models", "augmentations", "normalizers", "loaders", "targets"):
        entries = registry.entries(kind)
        assert entries, kind
        for entry in entries.values():
            assert entry.plugin


def test_list_models_pattern(registry):
    assert registry.list_models("mnist_step*") == ["mnist_step1", "mnist_step2", "mnist_step3"]
    assert "mnist_gap" in registry.list_models("mnist*")
    assert registry.list_models("nothing*") == []


def test_create_model_uses_normalizer_hook(registry):
    from torch import nn

    bn = registry.create_model("mnist_gap")
    gn = registry.create_model("mnist_gap", normalizer="group")
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in gn.modules())


def test_unknown_name_lists_valid_ones(registry):
    with pytest.raises(UsageError, match="unknown model 'nope'; valid models: .*mnist_gap"):
        registry.model("nope")
    with pytest.raises(UsageError, match="valid normalizers: batch, group, layer"):
        registry.normalizer("instance")


def test_duplicate_name_names_both_plugins():
    reg = make_registry("dup_model")
    with pytest.raises(PluginError) as err:
        reg.entries("models")
    assert "'mnist_gap' is registered twice" in str(err.value)
    assert "'mnist_models'" in str(err.value) and "'dup_model'" in str(err.value)


def test_plugin_raising_while_registering_is_named():
    reg = make_registry("raising_plugin")
    with pytest.raises(PluginError, match="plugin 'raising_plugin' raised while registering models: RuntimeError"):
        reg.entries("models")


def test_plugin_failing_import_is_named():
    with pytest.raises(BenchError, match="plugin 'broken_import'.*failed to import"):
        make_registry("broken_import")


def test_wrong_record_type_is_rejected():
    with pytest.raises(BenchError, match="returned dict from cnnbench_models; expected ModelSpec"):
        make_registry("wrong_type").entries("models")


def test_extra_module_and_env_variable(monkeypatch):
    assert "extra_net" in make_registry("extra_model").list_models()
    monkeypatch.setenv("BENCH_PLUGINS", "extra_model")
    assert "extra_net" in make_registry().list_models()


def test_autoload_switch_keeps_builtins_and_explicit(monkeypatch):
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = make_registry("extra_model")
    assert {"mnist_gap", "extra_net"} <= set(reg.list_models())


def test_model_spec_is_frozen():
    spec = make_registry().model("mnist_gap")
    assert isinstance(spec, ModelSpec)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
