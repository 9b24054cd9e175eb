"""Several seeds in one computation on CPU: can it beat running them one after another?

One training step (forward, loss, backward, SGD Nesterov) of ``mnist_fast`` at batch 128 on this
machine's threads, for one seed, and for K seeds built three ways:

- ``vmap``: the seeds' parameters stacked and ``torch.func.vmap`` over ``functional_call``, the
  construction ``bench run --fused`` uses (each convolution becomes a grouped one inside vmap);
- ``grouped``: the K networks written as one network whose convolutions have ``groups=K`` and whose
  norms, ReLUs and pools run over the K·C stacked channels (every layer of mnist_fast is per
  channel, so each seed stays its own network), in NCHW;
- ``grouped-cl``: the same in channels_last, where the grouped convolutions run fastest.

Not part of the default run (marked ``benchmark_suite``)::

    pytest tests/benchmarks/test_fused_cpu.py -m benchmark_suite --benchmark-enable \\
        --benchmark-json results/benchmarks/fused_cpu.json

The JSON's ``fused_cpu`` section gives each case's step time as a multiple of one seed's and its
per-seed speed-up over running the K seeds one after another (1.0: no gain). ``--fused`` on a CPU
asks for five seeds in less than twice one seed's time: a step-time ratio under 2.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from cnnbench.plugins.nets.fast import MnistFast

pytestmark = pytest.mark.benchmark_suite

SEEDS, BATCH = 5, 128
WIDTHS = (10, 14, 16, 16, 14)


def grouped_mnist_fast(k: int) -> nn.Module:
    """``k`` mnist_fast networks as one: grouped convolutions, per-channel norms over k·C channels."""

    def unit(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin * k, cout * k, 3, groups=k, bias=False), nn.BatchNorm2d(cout * k), nn.ReLU()]

    a, b, c, d, e = WIDTHS
    return nn.Sequential(*unit(1, a), nn.MaxPool2d(2), *unit(a, b), *unit(b, c), *unit(c, d), *unit(d, e),
                         nn.AdaptiveAvgPool2d(1), nn.Conv2d(e * k, 10 * k, 1, groups=k, bias=False))


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)


def one_seed_step() -> Any:
    model = MnistFast()
    optimizer = sgd(model.parameters())
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(x), y).backward()
        optimizer.step()

    return step


def vmap_step(k: int) -> Any:
    models = [MnistFast() for _ in range(k)]
    params, buffers = stack_module_state(models)
    leaves = [p.detach().requires_grad_() for p in params.values()]
    params = dict(zip(params, leaves, strict=True))
    optimizer = sgd(leaves)
    base = models[0].to("meta")
    x, y = torch.randn(k, BATCH, 1, 28, 28), torch.randint(0, 10, (k, BATCH))

    def loss(p: dict[str, Any], b: dict[str, Any], xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(functional_call(base, (p, b), (xs,)), ys)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        vmap(loss, randomness="different")(params, buffers, x, y).sum().backward()
        optimizer.step()

    return step


def grouped_step(k: int, channels_last: bool) -> Any:
    model = grouped_mnist_fast(k)
    optimizer = sgd(model.parameters())
    x, y = torch.randn(BATCH, k, 28, 28), torch.randint(0, 10, (BATCH * k,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(x).reshape(BATCH, k, 10).transpose(0, 1).reshape(k * BATCH, 10)
        (F.cross_entropy(logits, y) * k).backward()  # the sum of the seeds' mean losses
        optimizer.step()

    return step


CASES = {
    "one seed": (1, one_seed_step),
    f"{SEEDS} seeds vmap": (SEEDS, lambda: vmap_step(SEEDS)),
    f"{SEEDS} seeds grouped": (SEEDS, lambda: grouped_step(SEEDS, False)),
    f"{SEEDS} seeds grouped-cl": (SEEDS, lambda: grouped_step(SEEDS, True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_step(benchmark: Any, case: str) -> None:
    seeds, make = CASES[case]
    step = make()
    for _ in range(3):
        step()
    benchmark.extra_info.update({"case": case, "seeds": seeds, "images": seeds * BATCH,
                                 "threads": torch.get_num_threads()})
    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=1)


def test_grouped_network_is_k_networks() -> None:
    """The grouped construction computes each seed's own network: seed j's slice of the grouped
    output equals a lone mnist_fast-shaped network with seed j's weights."""
    k = 3
    torch.manual_seed(0)
    grouped = grouped_mnist_fast(k).eval()
    x = torch.randn(4, k, 28, 28)
    out = grouped(x).reshape(4, k, 10)
    for j in range(k):
        lone = grouped_mnist_fast(1).eval()
        for (name, mine), theirs in zip(lone.state_dict().items(), grouped.state_dict().values(), strict=True):
            if mine.ndim == 0:
                continue
            size = mine.shape[0]
            mine.copy_(theirs[j * size:(j + 1) * size])
            assert name
        assert torch.allclose(lone(x[:, j:j + 1]).reshape(4, 10), out[:, j], atol=1e-5)


def fused_summary(output_json: dict[str, Any]) -> list[dict[str, Any]]:
    """Each case's median step time against one seed's: ratio, and per-seed speed-up over one-after-another."""
    medians = {b["extra_info"]["case"]: (b["extra_info"]["seeds"], b["stats"]["median"])
               for b in output_json.get("benchmarks", []) if "case" in b.get("extra_info", {})}
    if "one seed" not in medians:
        return []
    one = medians["one seed"][1]
    return [{"case": case, "seeds": seeds, "step_ms": round(1000 * t, 2), "x_one_seed_step": round(t / one, 2),
             "per_seed_speedup": round(seeds * one / t, 2)} for case, (seeds, t) in medians.items()]
