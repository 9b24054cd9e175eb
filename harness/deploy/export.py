"""A run's weights -> the eval-mode model -> batch norms folded -> an ONNX file.

The exporter is torch's own (``torch.onnx.export``, the ``torch.export``-based one); a model it
cannot translate is one line naming the operator.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.errors import PluginError, RecordError
from cnnbench.registry import Registry, first_line
from cnnbench.runrecord import RunRecord
from cnnbench.verify.replay import load_weights, rebuilt_model

if TYPE_CHECKING:
    from torch import nn

INPUT, OUTPUT = "input", "log_probs"
OPSET = 18


class UnsupportedModel(PluginError):
    """The exporter, the quantizer or ONNX Runtime cannot handle an operator of the model."""


@dataclass(frozen=True)
class Folded:
    model: Any  # nn.Module in eval mode, batch norms folded where they follow a convolution
    batch_norms: int  # in the trained model
    folded: int  # folded into the convolution before them
    note: str = ""  # why none were folded, when tracing failed


def weights_path(record: RunRecord, results_dir: Path) -> Path:
    """The run's saved weights; a run without them is one line."""
    if not record.weights:
        raise RecordError(f"run {record.run_id} saved no weights (it ran with --no-weights): nothing to deploy")
    path = Path(results_dir) / record.weights
    if not path.is_file():
        raise RecordError(f"run {record.run_id}: its weights {path} are missing: nothing to deploy")
    return path


def trained_model(record: RunRecord, registry: Registry, weights: Path) -> nn.Module:
    """The run's model as it was evaluated: rebuilt from the plugin, its weights loaded, eval mode.
    A model that changed since the run, or weights of another model, is one line."""
    model = rebuilt_model(record, registry)
    state = load_weights(weights)
    wanted = model.state_dict()
    if set(state) != set(wanted):
        missing, extra = sorted(set(wanted) - set(state))[:3], sorted(set(state) - set(wanted))[:3]
        raise RecordError(f"{weights}: not the weights of model {record.model!r} (missing: "
                          f"{', '.join(missing) or '-'}; not in the model: {', '.join(extra) or '-'})")
    shapes = [k for k, v in state.items() if tuple(getattr(v, "shape", ())) != tuple(wanted[k].shape)]
    if shapes:
        raise RecordError(f"{weights}: not the weights of model {record.model!r} (other shapes: "
                          f"{', '.join(shapes[:3])})")
    model.load_state_dict(state)
    return model.eval()


def fold_batch_norms(model: nn.Module) -> Folded:
    """Fold every batch norm that directly follows a convolution into it (``torch.fx``); the
    others (after a ReLU, say) stay as they are. A model ``torch.fx`` cannot trace is kept whole."""
    from torch import nn  # lazy: torch
    from torch.fx.experimental.optimization import fuse  # lazy: torch

    def count(m: nn.Module) -> int:
        return sum(isinstance(x, nn.BatchNorm1d | nn.BatchNorm2d) for x in m.modules())

    before = count(model)
    if not before:
        return Folded(model, 0, 0)
    try:
        fused = fuse(model).eval()
    except Exception as exc:  # tracing third-party code: any failure means "not foldable this way"
        return Folded(model, before, 0, f"not traced by torch.fx ({type(exc).__name__}: {first_line(exc)})")
    return Folded(fused, before, before - count(fused))


def unsupported_operator(exc: BaseException) -> str:
    """The operator an exporter or runtime error names (``aten::foo``, ``Foo(18)``), else its first line."""
    text = str(exc)
    for pattern in (r"op='([\w.]+)'", r"torch\.ops\.(\w+\.\w+)", r"aten[.:]+\w+(?:\.\w+)?",
                    r"implementation for (\w+\(\d+\))", r"op_type[=:]\s*'?(\w+)", r"operator[s]? '?([\w:.]+)'?"):
        found = re.search(pattern, text)
        if found:
            return found.group(1) if found.groups() else found.group(0)
    return f"{type(exc).__name__}: {first_line(exc)}"


def export_onnx(model: nn.Module, image_shape: tuple[int, int, int], path: Path, name: str) -> None:
    """Export ``model`` (batch size free) to ``path``; an operator the exporter lacks is one line."""
    import torch  # lazy: torch

    sample = torch.zeros(2, *image_shape)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (sample,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT], opset_version=OPSET,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},), verbose=False,
            )
            assert program is not None
            program.save(str(path))
    except ImportError as exc:
        raise UnsupportedModel(f"model {name!r}: torch's ONNX exporter needs {exc.name or exc} "
                               "(pip install 'cnnbench[deploy]')") from None
    except Exception as exc:  # the exporter raises many kinds; what matters is the operator
        raise UnsupportedModel(f"model {name!r} cannot be exported to ONNX: unsupported operator "
                               f"{unsupported_operator(exc)}") from None
