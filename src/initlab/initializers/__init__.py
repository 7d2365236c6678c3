"""The initializer catalogue: Keras 3's initializers by name, plus torch's and JAX's extras.

The lowest layer of initlab: one module per family (``constant``, ``random``, ``variance_scaling``,
``matrix``, ``stft``) on ``base.Initializer``, ``registry`` (``get``, ``register``, ``catalogue``), and what
the catalogue needs — ``fans``, ``description`` (the ``Description`` record) and ``describe``,
``activations``, ``quadrature`` and ``gain``; and the counter-based generator that fills any shard of a
tensor with the values it has in the whole (``counter``, ``shard_index``, ``counter_fill``). Nothing here imports from another part of initlab; higher
layers add initializers through :func:`register` (``initlab.theory.critical_init`` registers ``Critical``).
"""

from .base import Initializer, Seed
from .constant import Constant, Ones, Zeros
from .matrix import DeltaOrthogonal, Dirac, Identity, Orthogonal, Sparse
from .random import RandomNormal, RandomUniform, TruncatedNormal, TruncNormal
from .registry import CATALOGUE, catalogue, get, register, serialize
from .stft import STFT
from .variance_scaling import (
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    KaimingNormal,
    KaimingUniform,
    LecunNormal,
    LecunUniform,
    TorchDefault,
    VarianceScaling,
    XavierNormal,
    XavierUniform,
)

__all__ = [
    "CATALOGUE",
    "STFT",
    "Constant",
    "DeltaOrthogonal",
    "Dirac",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "KaimingNormal",
    "KaimingUniform",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "Seed",
    "Sparse",
    "TorchDefault",
    "TruncNormal",
    "TruncatedNormal",
    "VarianceScaling",
    "XavierNormal",
    "XavierUniform",
    "Zeros",
    "catalogue",
    "get",
    "register",
    "serialize",
]
