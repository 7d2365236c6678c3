"""Model factories for ``initlab inspect`` (``initlab inspect examples/models.py:deep_tanh --input-shape 64,40``).

Each function takes no arguments and returns a freshly built ``torch.nn.Module`` with PyTorch's own
default initialization, so ``inspect`` shows what the default does (add ``--plan auto`` to see the fix).
"""

from torch import nn


def _mlp(act: type[nn.Module], depth: int, width: int = 128, n_in: int = 40, n_out: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan = n_in
    for _ in range(depth):
        layers += [nn.Linear(fan, width), act()]
        fan = width
    return nn.Sequential(*layers, nn.Linear(fan, n_out))


def deep_tanh() -> nn.Sequential:
    """Tanh MLP, depth 10, width 128, MNIST-1D-shaped (40 inputs, 10 classes)."""
    return _mlp(nn.Tanh, 10)


def deep_relu() -> nn.Sequential:
    """Plain ReLU MLP, depth 30, width 128: the default init's signal dies on the way up and down."""
    return _mlp(nn.ReLU, 30)


def plain_cnn() -> nn.Sequential:
    """A plain 1-D CNN over (batch, 1, 40) inputs: 12 × [Conv1d(32, k 3) + ReLU], pooled, Linear(32, 10)."""
    layers: list[nn.Module] = []
    c_in = 1
    for _ in range(12):
        layers += [nn.Conv1d(c_in, 32, 3, padding=1), nn.ReLU()]
        c_in = 32
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10))
