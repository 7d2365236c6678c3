"""Small models shared by several test files."""

import torch
from torch import nn


class Block(nn.Module):
    """A residual block x + fc2(relu(fc1(x))) of two ``width``-by-``width`` linear layers."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))
