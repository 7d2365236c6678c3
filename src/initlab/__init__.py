"""initlab: neural-network weight initialization, measured.

The catalogue (Keras 3 names and semantics, torch/JAX extras), fans for every layout, a gain for
any activation, and ``describe()``; whole-model plans, inspection, theory, LSUV and experiments build
on them.

The package is layered — ``initializers`` (the catalogue), ``theory``, ``plan``, ``inspect``,
``experiments``, then ``cli`` — and each layer imports only from itself and the layers before it
(ARCHITECTURE.md). ``initlab.plan`` and ``initlab.inspect`` here are the functions; their packages'
modules are imported by full path (``from initlab.plan.presets import register_preset``).
"""

from . import theory
from ._version import __version__ as __version__
from .experiments.data import Dataset, load_dataset
from .experiments.demo import run_demo
from .experiments.training import Grid, compare, init_model, make_mlp, train
from .experiments.tutorial import TutorialRow, tutorial_node, tutorial_table
from .initializers import *  # noqa: F403
from .initializers import __all__ as _init_all
from .initializers.activations import Activation, activation, known_activations
from .initializers.counter_fill import fill_counter
from .initializers.describe import Description, describe
from .initializers.fans import LAYOUTS, Fans, fans
from .initializers.gain import gain
from .initializers.shard_index import ShardIndex
from .inspect.findings import Finding
from .inspect.fix import FixResult, fix
from .inspect.report import Report, plot
from .inspect.run import inspect
from .plan import Plan, PlanEntry, plan
from .plan.mup import BaseShapes, LrScale, WidthShape, base_shapes, width_shapes
from .plan.presets import register_preset
from .plan.trace import ModelTrace, ParamReading, trace_model
from .theory.critical_init import Critical
from .theory.lsuv import LSUVResult, lsuv
from .theory.residual import find_residual_branches, residual_init
from .theory.streams import ResidualAdd, ResidualStream, residual_streams

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
    # reading a model from one forward pass (issue 14): each parameter's role, the residual streams
    "ModelTrace",
    "ParamReading",
    "ResidualAdd",
    "ResidualStream",
    "residual_streams",
    "trace_model",
    # sharded initialization (issue 15): counter-based fills of any block of a tensor
    "ShardIndex",
    "fill_counter",
    # μP (issue 14): base shapes, width dimensions and learning-rate factors (preset 'mup', Plan.param_groups)
    "BaseShapes",
    "LrScale",
    "WidthShape",
    "base_shapes",
    "width_shapes",
]
