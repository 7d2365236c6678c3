"""initlab: neural-network weight initialization, measured.

The catalogue (Keras 3 names and semantics, torch/JAX extras), fans for every layout, a gain for
any activation, and ``describe()``; whole-model plans, inspection, theory, LSUV and experiments build
on them.
"""

from . import theory
from .activations import Activation, activation, known_activations
from .critical import Critical
from .data import Dataset, load_dataset
from .demo import run_demo
from .describe import Description, describe
from .experiments import Grid, compare, init_model, make_mlp, train
from .fans import LAYOUTS, Fans, fans
from .findings import Finding
from .fix import FixResult, fix
from .gain import gain
from .initializers import *  # noqa: F403
from .initializers import __all__ as _init_all
from .inspect import inspect
from .lsuv import LSUVResult, lsuv
from .plan import Plan, PlanEntry, plan
from .presets import register_preset
from .report import Report, plot
from .residual import find_residual_branches, residual_init
from .tutorial import TutorialRow, tutorial_node, tutorial_table

__version__ = "0.1.0"

__all__ = [
    # catalogue: fans, gains, describe (plus every initializer class and get/serialize below)
    "LAYOUTS",
    "Activation",
    "Description",
    "Fans",
    "activation",
    "describe",
    "fans",
    "gain",
    "known_activations",
    # whole models
    "Plan",
    "PlanEntry",
    "plan",
    "register_preset",
    # inspection
    "Finding",
    "FixResult",
    "Report",
    "fix",
    "inspect",
    "plot",
    # theory and data-driven init
    "Critical",
    "LSUVResult",
    "find_residual_branches",
    "lsuv",
    "residual_init",
    "theory",
    # experiments
    "Dataset",
    "Grid",
    "TutorialRow",
    "compare",
    "init_model",
    "load_dataset",
    "make_mlp",
    "run_demo",
    "train",
    "tutorial_node",
    "tutorial_table",
    *_init_all,
]
