"""Experiments: the tutorial's node, datasets made locally, training grids (``initlab compare``), the demo
(``initlab demo``) and its HTML report.

``from initlab.experiments import Grid, compare`` works as it always has: this package re-exports
:mod:`initlab.experiments.training` (train, Grid, compare, init_model, make_mlp, run_cell, …). Its other
modules: :mod:`~initlab.experiments.data` (MNIST-1D, digits, your .npz/.csv), :mod:`~initlab.experiments.tutorial`
(the 250-input node), :mod:`~initlab.experiments.render` (figures, the HTML report) and
:mod:`~initlab.experiments.demo` (``run_demo``). This is the top library layer: it may use everything
below it (catalogue, theory, plans, inspection); only the command line (:mod:`initlab.cli`) sits above.
"""

from .training import *  # noqa: F403  (the training API, what ``initlab.experiments`` always exported)
from .training import __all__ as __all__
