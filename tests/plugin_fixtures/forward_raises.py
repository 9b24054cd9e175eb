"""A model whose forward raises (plugin code the training loop calls directly)."""

from cnnbench import ModelSpec, Recipe, hookimpl


def raising_net(norm, dropout=0.0):
    from torch import nn

    class RaisingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 10, 28)

        def forward(self, x):
            raise ValueError("forward cannot cope")

    return RaisingNet()


@hookimpl
def cnnbench_models():
    return [ModelSpec("raising_net", "mnist", raising_net, "raises in forward", "tests", 7_850, Recipe(epochs=1))]
