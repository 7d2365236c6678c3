"""initlab: neural-network weight initialization, measured.

The catalogue (Keras 3 names and semantics, torch/JAX extras), fans for every layout, a gain for
any activation, and ``describe()``; whole-model plans, inspection, theory, LSUV and experiments build
on them.
"""

from .activations import Activation, activation, known_activations
from .describe import Description, describe
from .fans import LAYOUTS, Fans, fans
from .gain import gain
from .initializers import *  # noqa: F403
from .initializers import __all__ as _init_all

__version__ = "0.1.0"

__all__ = [
    "LAYOUTS",
    "Activation",
    "Description",
    "Fans",
    "activation",
    "describe",
    "fans",
    "gain",
    "known_activations",
    *_init_all,
]
