"""A model whose output turns NaN in its second training epoch (to test divergence)."""

from cnnbench import ModelSpec, Recipe, hookimpl


def nan_net(norm, dropout=0.0):
    import torch
    from torch import nn

    from cnnbench.blocks import LogSoftmaxHead

    class NanNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 10, 28)
            self.head = LogSoftmaxHead()
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

        def forward(self, x):
            out = self.head(self.conv(x))
            if self.training:
                self.steps += 1
                if self.steps > 4:  # epoch 2 with 512 images at batch 128
                    return out * float("nan")
            return out

    return NanNet()


@hookimpl
def cnnbench_models():
    return [ModelSpec("nan_net", "mnist", nan_net, "turns NaN in epoch 2", "tests", 7_850, Recipe(epochs=3))]
