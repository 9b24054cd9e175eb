"""A plugin whose model uses an operator ONNX has no translation for (``torch.histc``)."""

from cnnbench import ModelSpec, Recipe, hookimpl


def build(norm=None, dropout=None):
    import torch
    from torch import nn

    class HistogramNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 10, 28)

        def forward(self, x):
            out = self.conv(x).flatten(1)
            return torch.log_softmax(out + torch.histc(out, 4).sum() * 0, dim=1)

    return HistogramNet()


@hookimpl
def cnnbench_models():
    return [ModelSpec("histogram_net", "mnist", build, "uses torch.histc", "test", 7_850, Recipe(epochs=1))]
