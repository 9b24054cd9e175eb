"""Registers the MNIST networks of seeds 004 and 000 with their default recipes."""

from __future__ import annotations

from cnnbench import ModelSpec, Recipe, hookimpl

NETS = "cnnbench.plugins.nets.mnist"
# Steps 1-3 of seed 004 trained with plain SGD at lr 0.01 ("Initially we tried with learning rate 0.01").
EARLY_STEPS = Recipe(epochs=15, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9)


@hookimpl
def cnnbench_models() -> list[ModelSpec]:
    return [
        ModelSpec("mnist_step1", "mnist", f"{NETS}:Seed004Step1",
                  "Seed 004 step 1: baseline Conv-BN-ReLU, 7x7 classifier conv",
                  "seed 004, step 1 (best test 99.29%)", 10_970, EARLY_STEPS),
        ModelSpec("mnist_step2", "mnist", f"{NETS}:Seed004Step2",
                  "Seed 004 step 2: narrower, dropout 0.10, 5x5 classifier conv",
                  "seed 004, step 2 (best test 99.28%)", 6_864, EARLY_STEPS),
        ModelSpec("mnist_step3", "mnist", f"{NETS}:Seed004Step3",
                  "Seed 004 step 3: GAP head, more capacity, dropout 0.007",
                  "seed 004, step 3 (best test 99.37%)", 8_008, EARLY_STEPS),
        ModelSpec("mnist_gap", "mnist", f"{NETS}:Seed004Step4",
                  "Seed 004 step 4: GAP head, rotation, SGD 0.1 + StepLR(2, 0.6); met 99.4% < 10k",
                  "seed 004, step 4 (best test 99.46%)", 7_852,
                  Recipe(epochs=15, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, scheduler="step",
                         step_size=2, gamma=0.6, augmentation="rotate10")),
        # Seed 000 gives only RandomRotation(10) and "under 20 epochs"; the optimizer and
        # schedule are cnnbench's choice.
        ModelSpec("mnist_2block", "mnist", f"{NETS}:Seed000Net",
                  "Seed 000: two blocks + 1x1/max-pool transition, BN and dropout at every layer, GAP",
                  "seed 000 (99.5% in under 20 epochs, < 20k params)", 19_728,
                  Recipe(epochs=19, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="step",
                         step_size=6, gamma=0.25, augmentation="rotate10")),
    ]
