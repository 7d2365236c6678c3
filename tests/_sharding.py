"""Shared by the sharded-initialization tests: one case per catalogue initializer (and the variants whose
laws differ), the placements they are sharded with, and a module that holds a list of parameters."""

from __future__ import annotations

import torch
from torch import nn

import initlab
from initlab import CATALOGUE

#: (name, initializer, shape, layout). Shapes are uneven for 4 ranks on purpose: 10 rows split 3/3/3/1,
#: 14 columns 4/4/4/2. Every class of the catalogue appears (test_every_catalogue_class_has_a_case).
CASES = [
    ("zeros", initlab.Zeros(), (10, 14), "torch"),
    ("ones", initlab.Ones(), (10, 14), "torch"),
    ("constant", initlab.Constant(0.3), (10, 14), "torch"),
    ("random_normal", initlab.RandomNormal(0.1, 0.5), (10, 14), "torch"),
    ("random_uniform", initlab.RandomUniform(-0.2, 0.7), (10, 14), "torch"),
    ("truncated_normal", initlab.TruncatedNormal(0.0, 0.2), (10, 14), "torch"),
    ("variance_scaling_trunc", initlab.VarianceScaling(2.0, "fan_avg", "truncated_normal"), (10, 14), "torch"),
    ("variance_scaling_normal", initlab.VarianceScaling(1.5, "fan_out", "untruncated_normal"), (10, 14), "torch"),
    ("variance_scaling_uniform", initlab.VarianceScaling(0.5, "fan_geo_avg", "uniform"), (10, 14), "torch"),
    ("glorot_normal", initlab.GlorotNormal(), (10, 14), "torch"),
    ("glorot_uniform", initlab.GlorotUniform(), (10, 14), "torch"),
    ("he_normal", initlab.HeNormal(), (10, 14), "torch"),
    ("he_uniform", initlab.HeUniform(), (10, 14), "torch"),
    ("lecun_normal", initlab.LecunNormal(), (10, 14), "torch"),
    ("lecun_uniform", initlab.LecunUniform(), (10, 14), "torch"),
    ("xavier_uniform", initlab.XavierUniform(gain=1.3), (10, 14), "torch"),
    ("xavier_normal", initlab.XavierNormal(), (10, 14), "torch"),
    ("kaiming_uniform", initlab.KaimingUniform(a=0.1), (10, 14), "torch"),
    ("kaiming_normal", initlab.KaimingNormal(mode="fan_out"), (10, 14), "torch"),
    ("torch_default", initlab.TorchDefault(), (10, 14), "torch"),
    ("trunc_normal", initlab.TruncNormal(0.0, 1.0, -1.5, 2.5), (10, 14), "torch"),
    ("trunc_normal_far", initlab.TruncNormal(0.0, 0.02), (10, 14), "torch"),  # torch's ±2 at std 0.02: ±100σ
    ("trunc_normal_tail", initlab.TruncNormal(0.5, 2.0, 3.0, 9.0), (10, 14), "torch"),
    ("orthogonal", initlab.Orthogonal(gain=1.2), (10, 14), "torch"),
    ("identity", initlab.Identity(gain=0.7), (10, 14), "torch"),
    ("dirac", initlab.Dirac(groups=2), (8, 4, 3, 3), "torch"),
    ("delta_orthogonal", initlab.DeltaOrthogonal(gain=1.1), (8, 4, 3, 3), "torch"),
    ("sparse", initlab.Sparse(sparsity=0.3, std=0.1), (10, 14), "torch"),
    ("stft", initlab.STFT("imag", window="hann"), (9, 2, 14), "torch"),
    ("critical", initlab.Critical("tanh"), (10, 14), "torch"),
    ("critical_bias", initlab.Critical("tanh"), (14,), "torch"),
    ("critical_orthogonal", initlab.Critical("tanh", orthogonal=True), (10, 14), "torch"),
]
#: Layout variants of the laws that read positions (checked on simulated shards).
KERAS_CASES = [
    ("dirac_keras", initlab.Dirac(groups=2), (3, 3, 4, 8), "keras"),
    ("sparse_keras", initlab.Sparse(sparsity=0.25, std=0.1), (14, 10), "keras"),
    ("glorot_keras", initlab.GlorotUniform(), (3, 3, 4, 8), "keras"),
]
#: Classes whose values need the whole tensor: no counter law, computed whole by an owner rank.
WHOLE = {"orthogonal", "delta_orthogonal", "stft", "critical_orthogonal"}


class Holder(nn.Module):
    """Parameters ``p0``, ``p1``, … as given (plain tensors or DTensors): a model planned by rules."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        for i, t in enumerate(tensors):
            self.register_parameter(f"p{i}", nn.Parameter(t, requires_grad=t.is_floating_point()))


def holder_plan(shapes_inits: list[tuple[tuple[int, ...], object]], dtype: torch.dtype = torch.float32):
    """A plan made on a meta twin: parameter ``p{i}`` of shape ``shapes_inits[i][0]`` gets its initializer."""
    with torch.device("meta"):
        twin = Holder([torch.empty(s, dtype=dtype) for s, _ in shapes_inits])
    return initlab.plan(twin, rules={f"p{i}": init for i, (_, init) in enumerate(shapes_inits)})


def every_class_covered() -> set[str]:
    """Catalogue classes (by name) that no case uses: should be empty."""
    used = {type(init).__name__ for _, init, _, _ in CASES}
    return {cls.__name__ for cls, (origin, _) in CATALOGUE.items() if origin != "user"} - used
