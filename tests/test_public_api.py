"""The public API survives the package's layout: ``initlab.__all__`` is the list it was before the move into
subpackages (frozen here), every name in it resolves, and the names that double as package names are
still what users call."""

from __future__ import annotations

import importlib
import types

import pytest

import initlab

# initlab.__all__ before the layout change (issue 13), in order: what `from initlab import *` gave.
PUBLIC = [
    "LAYOUTS", "Activation", "Description", "Fans", "activation", "describe", "fans", "gain", "known_activations",
    "Plan", "PlanEntry", "plan", "register_preset",
    "Finding", "FixResult", "Report", "fix", "inspect", "plot",
    "Critical", "LSUVResult", "find_residual_branches", "lsuv", "residual_init", "theory",
    "Dataset", "Grid", "TutorialRow", "compare", "init_model", "load_dataset", "make_mlp", "run_demo", "train",
    "tutorial_node", "tutorial_table",
    "CATALOGUE", "STFT", "Constant", "DeltaOrthogonal", "Dirac", "GlorotNormal", "GlorotUniform", "HeNormal",
    "HeUniform", "Identity", "Initializer", "KaimingNormal", "KaimingUniform", "LecunNormal", "LecunUniform", "Ones",
    "Orthogonal", "RandomNormal", "RandomUniform", "Seed", "Sparse", "TorchDefault", "TruncNormal", "TruncatedNormal",
    "VarianceScaling", "XavierNormal", "XavierUniform", "Zeros", "catalogue", "get", "register", "serialize",
]  # fmt: skip
# Appended since, in order.
PUBLIC += [
    "ModelTrace", "ParamReading", "ResidualAdd", "ResidualStream", "residual_streams", "trace_model",  # issue 14
    "ShardIndex", "fill_counter",  # issue 15: counter-based fills of any shard (sharded initialization)
    "BaseShapes", "LrScale", "WidthShape", "base_shapes", "width_shapes",  # issue 14: μP (preset 'mup')
]  # fmt: skip

# What `from <package> import name` gave before, for the module paths that became packages.
PACKAGE_NAMES = {
    "initlab.theory": [
        "CriticalPoint", "DepthScales", "NoCriticalPointError", "VarianceMap", "chi1", "correlation_fixed_point",
        "correlation_map", "critical", "critical_point", "depth_scales", "expectation", "fixed_point",
        "predict_std", "variance_map",
    ],
    "initlab.plan": ["Plan", "PlanEntry", "plan", "ModelTrace", "ParamReading", "trace_model", "BaseShapes", "LrScale",
                     "WidthShape", "base_shapes", "width_shapes"],
    "initlab.plan.presets": [  # was initlab.presets
        "AUTO_OPTIONS", "MUP_OPTIONS", "PRESETS", "ParamSite", "PostStep", "PresetContext", "PresetOption", "PresetSpec",
        "preset_names", "preset_options", "register_preset",
    ],
    "initlab.inspect": [
        "BlockStats", "CallStats", "ParamStats", "SaturationRule", "Trends", "flush_denormal_state", "inspect",
        "saturation_rule", "trends",
    ],
    "initlab.experiments": [
        "ACTIVATIONS", "INIT_NAMES", "OPTIMIZERS", "Cell", "CompareResult", "Grid", "TrainResult", "compare",
        "flush_denormal", "init_model", "make_mlp", "run_cell", "summarize", "threads", "train",
    ],
}  # fmt: skip


def test_all_is_unchanged():
    assert initlab.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name):
    assert getattr(initlab, name) is not None
    namespace: dict = {}
    exec(f"from initlab import {name}", namespace)
    assert namespace[name] is getattr(initlab, name)


def test_star_import_gives_the_public_names():
    namespace: dict = {}
    exec("from initlab import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_plan_and_inspect_are_the_functions_and_theory_the_namespace():
    # initlab.plan and initlab.inspect are also package names: on `initlab` they are the functions
    from initlab.inspect.run import inspect
    from initlab.plan.build import plan

    assert initlab.plan is plan and initlab.inspect is inspect
    assert isinstance(initlab.theory, types.ModuleType) and initlab.theory.__name__ == "initlab.theory"
    assert callable(initlab.theory.critical) and initlab.theory.critical("relu", 0.0) == 2.0
    assert initlab.__version__ == "0.1.0"


@pytest.mark.parametrize("package", sorted(PACKAGE_NAMES))
def test_old_module_paths_still_export_their_names(package):
    module = importlib.import_module(package)
    for name in PACKAGE_NAMES[package]:
        assert hasattr(module, name), f"{package}.{name}"
    assert set(PACKAGE_NAMES[package]) <= set(module.__all__)
