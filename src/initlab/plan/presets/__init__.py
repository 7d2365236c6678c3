"""Presets: how a whole model is initialized — like PyTorch, Keras 3 or Flax would, or by its activations.

A preset is a function ``fn(ctx: PresetContext) -> None`` that looks at every parameter initlab knows
(``ctx.sites``: path, parameter, :class:`~initlab.plan.layers.LayerInfo`, :class:`~initlab.plan.layers.ParamInfo`)
and chooses an initializer for it, or for each of its slices, with the reason::

    import initlab
    from initlab.plan.presets import PresetContext, register_preset

    def my_preset(ctx: PresetContext) -> None:
        ctx.apply_preset("auto")                       # start from another preset ...
        for site in ctx.sites:
            if site.info.role == "bias":               # ... and change what you need
                ctx.set(site, initlab.Constant(0.01), "small positive bias for ReLU units")
        ctx.add_post_step("rescale", lambda model: ..., "why the step runs after every value is filled")

    register_preset("mine", my_preset, description="auto, with 0.01 biases", needs_example_input=True)
    initlab.plan(model, preset="mine", example_input=x).apply(seed=0)

``ctx.set(site, init, why, part=..., fans=...)`` records a choice (a later call for the same parameter or
slice replaces an earlier one), ``ctx.leave(site, why)`` leaves a parameter as is, ``ctx.activation_after
(site)`` returns the activation that follows the site's layer (needs ``example_input`` or an fx-traceable
model), and ``ctx.add_post_step(name, fn, why)`` attaches a callable ``fn(model)`` that
:meth:`~initlab.plan.Plan.apply` runs after all parameters are filled (data-driven rescaling such as
LSUV); the plan prints it. A post step that raises restores every parameter.

Built-in presets, one module each in this package (registered in this order when it is imported):

- ``torch``: what each module's ``reset_parameters`` draws (frameworks.md §4): U(±1/√fan_in) for
  Linear/Conv weights and biases (the bias bound uses the *weight's* fan_in; ConvTranspose reads it from the
  output channels), U(±1/√H) for every recurrent parameter, N(0, 1) embeddings with the ``padding_idx``
  row zeroed, the packed (3E, E) ``in_proj_weight`` Xavier-uniform as one matrix, ``out_proj.weight``
  U(±1/√E), zero attention biases, ``nn.Transformer``'s Xavier on every matrix.
- ``keras``: what Keras 3 gives the same architecture (§2): Glorot-uniform kernels with Keras's fans, zero
  biases, orthogonal recurrent kernels on the whole (u, G·u) block, LSTM forget-gate bias 1,
  Embedding U(±0.05), PReLU 0. For Keras layers: each layer's own configured initializers.
- ``flax``: LeCun-normal kernels (truncated, fan_in with feature groups), zero biases, orthogonal
  recurrent kernels per H×H gate, ``Embed`` N(0, 1/√features) (§5.2).
- ``auto``: activation-aware. Dense (2-D) kernels followed by a ReLU-like or tanh-like activation:
  ``Orthogonal(gain)`` — √(2/(1+a²)) for the ReLU family, √σ_w² with σ_w² the edge-of-chaos scale at
  σ_b² = 0.05 (1.327 for tanh) — measured to train better than the i.i.d. laws on deep MLPs
  (option ``dense='variance'`` restores those). Otherwise: He for the ReLU family (the leaky slope
  respected, He et al. 2015), the forward gain of ``initlab.gain`` for any other smooth activation
  (var = g²/fan_in), Glorot for tanh, sigmoid and linear layers (Glorot & Bengio 2010), orthogonal
  recurrent weights per gate (Saxe et al. 2014) with LSTM forget bias 1 (Jozefowicz et al. 2015); true
  fans throughout (grouped and depthwise convolutions included).

Options. A preset may declare typed options (:class:`PresetOption`, passed to :func:`register_preset`);
``initlab.plan(model, preset, options={...})`` checks them before anything runs (an unknown name or a
bad value is an error naming the option and what it accepts) and the preset reads them from
``ctx.options``. ``preset_options(name)`` lists them. ``auto``'s options::

    initlab.plan(model, preset="auto", example_input=x,
                 options={"saturating": "critical", "smooth": "critical", "sigma_b2": 0.05, "orthogonal": True})

- ``saturating``: ``"glorot"`` (default) or ``"critical"`` — layers followed by a tanh-like (tanh,
  softsign, hardtanh) or sigmoid-like activation get ``Critical(φ, sigma_b2)``: σ_w² with χ₁ = 1 at the
  fixed point q* (Poole et al. 2016; Schoenholz et al. 2017), and their biases N(0, σ_b²);
- ``smooth``: ``"gain"`` (default) or ``"critical"`` — the same for GELU, SiLU, ELU, SELU, … layers;
- ``sigma_b2`` (number ≥ 0, default 0.05): the bias variance the critical σ_w² is solved for;
- ``dense``: ``"orthogonal"`` (default) or ``"variance"`` — the orthogonal rule for dense kernels above,
  or the i.i.d. law (He, Glorot) everywhere;
- ``orthogonal`` (bool, default False): scaled (delta-)orthogonal critical weights — dynamical isometry
  (Pennington et al. 2017).

Where φ has no usable critical point (none at this σ_b², only an unstable one, or one that inputs of
mean square 1 do not reach — GELU, SiLU, Mish, softplus at σ_b² = 0.05), the layer keeps auto's usual
choice and its ``why`` says so and why. Only dense and convolutional layers are covered (the mean-field
theory's setting).

Besides ``torch``, ``keras``, ``flax`` and ``auto`` (listed above): ``critical`` / ``critical_orthogonal``
(:mod:`.critical`), ``lsuv`` / ``lsuv_residual`` (:mod:`.lsuv`), ``skipinit`` / ``fixup`` (:mod:`.residual`), ``mup`` (:mod:`.mup`: μP from a base model,
``options={"base": base_model}``, with :meth:`~initlab.plan.Plan.param_groups` for the optimizer).
A new built-in preset is a new module here that calls :func:`register_preset` at import, added to the
imports below.
"""

from ..context import PresetContext
from ..registry import PRESETS, PresetOption, PresetSpec, preset_names, preset_options, register_preset
from ..sites import ParamSite, PostStep

# The built-in presets register themselves on import, in this order (the order preset_names() lists).
# isort: off
from . import torch  # noqa: F401
from . import keras  # noqa: F401
from . import flax  # noqa: F401
from . import auto  # noqa: F401
from . import critical  # noqa: F401
from . import lsuv  # noqa: F401
from . import residual  # noqa: F401
from . import hf  # noqa: F401
from . import mup  # noqa: F401
# isort: on
from .auto import AUTO_OPTIONS
from .mup import MUP_OPTIONS

__all__ = [
    "AUTO_OPTIONS",
    "MUP_OPTIONS",
    "PRESETS",
    "ParamSite",
    "PostStep",
    "PresetContext",
    "PresetOption",
    "PresetSpec",
    "preset_names",
    "preset_options",
    "register_preset",
]
