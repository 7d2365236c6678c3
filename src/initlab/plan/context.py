"""The :class:`PresetContext`: what a preset function sees (the sites, the model, the example input, its
options) and what it records (choices, post steps, notes); see :mod:`initlab.plan.presets` for the protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..initializers import Initializer, get
from ..initializers.fans import Fans
from .follow import _keras_follow, find_followers
from .layers import Part
from .registry import _get_preset, resolve_options
from .sites import Choice, Follow, ParamSite, PostStep

if TYPE_CHECKING:
    from ..theory.streams import ResidualStream
    from .trace import ModelTrace

__all__ = ["PresetContext"]


class PresetContext:
    """What a preset function sees and records; see the module docstring for the protocol."""

    def __init__(self, model: Any, sites: list[ParamSite], *, preset: str, example_input: Any = None,
                 options: Mapping[str, Any] | None = None, trace: ModelTrace | None = None) -> None:
        self.model = model
        self._trace = trace
        self.sites = sites
        self.preset = preset
        self.example_input = example_input
        #: The running preset's options, checked and completed with their defaults (see PresetOption).
        self.options: dict[str, Any] = dict(options or {})
        self.choices: dict[str, list[Choice]] = {}
        self.post_steps: list[PostStep] = []
        self.notes: list[str] = []
        self._follow: dict[int, Follow] | None = None
        #: Paths a rule of the plan() call covers: a preset may skip work for them (auto does).
        self.ruled: set[str] = set()
        #: Per-parameter learning-rate factors a preset sets (``mup``: :class:`~initlab.plan.mup.LrScale`), by
        #: parameter name; :meth:`Plan.param_groups <initlab.plan.Plan.param_groups>` reads them.
        self.lr_scales: dict[str, Any] = {}
        self._stack: list[str] = []

    @property
    def known_sites(self) -> list[ParamSite]:
        return [s for s in self.sites if s.known]

    @property
    def trace(self) -> ModelTrace:
        """What one forward pass on ``example_input`` says about the model (:class:`~initlab.plan.trace.ModelTrace`:
        every parameter's reading, the residual streams); :func:`initlab.plan` records it whenever it is given
        ``example_input``. Raises ``ValueError`` naming ``example_input`` when there is none."""
        if self._trace is None:
            if self.example_input is None:
                raise ValueError(f"example_input: preset {self.preset!r} reads the model's forward pass (its residual "
                                 "streams, the op that uses each parameter); pass example_input=<a batch>.")
            from .trace import trace_model

            self._trace = trace_model(self.model, self.example_input)
        return self._trace

    @property
    def residual_streams(self) -> list[ResidualStream]:
        """The model's residual streams (:func:`initlab.theory.streams.find_streams`), from :attr:`trace`."""
        return self.trace.streams

    def site(self, path: str) -> ParamSite:
        """The site of parameter ``path`` — any of a tied tensor's names."""
        for s in self.sites:
            if s.path == path or path in s.aliases:
                return s
        raise KeyError(f"path: no parameter {path!r} in the model; paths look like "
                       f"{', '.join(repr(s.path) for s in self.sites[:3])}.")

    def set(
        self,
        site: ParamSite,
        initializer: Initializer | None,
        why: str,
        *,
        part: Part | None = None,
        fans: Fans | None = None,
        label: str | None = None,
        index: tuple[Any, ...] | None = None,
        shape: tuple[int, ...] | None = None,
        fixed: bool = False,
    ) -> None:
        """Choose ``initializer`` for ``site`` (or for its slice ``part``, or for an ad-hoc slice
        ``index``/``label``); ``fans`` are those the initializer reads (default: the true fans).
        A whole-parameter choice replaces every earlier choice for the site. ``initializer`` may be
        anything :func:`initlab.get` accepts (an instance, a name, a Keras config dict)."""
        if initializer is not None and not isinstance(initializer, Initializer):
            try:
                initializer = get(initializer)
            except (ValueError, TypeError) as e:
                raise ValueError(f"initializer: preset {self.preset!r} chose {initializer!r} for {site.path!r}: {e}") from e
        if part is not None:
            label, index, shape = part.label, part.index, part.shape
            fans = fans if fans is not None else part.fans.get("true")
        elif fans is None and site.info is not None:
            fans = site.info.fans.get("true")
        ch = Choice(initializer, why, fans, label, index, shape, fixed, partition=part is not None)
        lst = self.choices.setdefault(site.path, [])
        if label is None:
            lst[:] = [ch]
            return
        lst[:] = [c for c in lst if c.label != label]
        lst.append(ch)

    def leave(self, site: ParamSite, why: str) -> None:
        """Leave ``site`` as it is (the plan lists it with ``why``)."""
        self.choices[site.path] = [Choice(None, why, None)]

    def apply_preset(self, name: str, options: Mapping[str, Any] | None = None) -> None:
        """Run another registered preset on this context (its choices and post steps are kept).

        ``options`` are that preset's own options (checked like :func:`initlab.plan`'s; the rest take
        their defaults), e.g. ``ctx.apply_preset("auto", options={"saturating": "critical"})``; while it
        runs, ``ctx.options`` holds them, and the calling preset's options come back afterwards."""
        spec = _get_preset(name)
        if name in self._stack:
            raise ValueError(f"preset: {name!r} applies itself (via {' -> '.join(self._stack)}).")
        resolved = resolve_options(name, options)
        outer = self.options
        self._stack.append(name)
        self.options = resolved
        try:
            spec.fn(self)
        finally:
            self._stack.pop()
            self.options = outer

    def add_post_step(self, name: str, fn: Callable[..., Any], why: str, *, seeded: bool = False) -> None:
        """Attach ``fn(model)``, run by :meth:`Plan.apply` after all values are filled, in order;
        ``seeded=True``: ``fn(model, seed)``, for a step that draws values from apply's seed."""
        if not callable(fn):
            raise TypeError(f"fn: a post step must be callable as fn(model), got {type(fn).__name__}.")
        self.post_steps.append(PostStep(name, fn, why, self.preset, seeded))

    def activation_after(self, site: ParamSite) -> Follow:
        """The activation that follows ``site``'s layer: a Keras layer's own ``activation``; for torch
        modules found by running ``example_input`` with hooks (functional activations included, through
        a ``TorchFunctionMode``), or by ``torch.fx`` tracing when no ``example_input`` is given."""
        layer = site.layer
        if layer is None:
            raise ValueError(f"site: {site.path!r} belongs to no known layer.")
        if layer.framework == "keras":
            return _keras_follow(layer)
        if layer.attrs.get("traced"):  # read from the ops (its module may hold more than this layer)
            return self.trace.follow(site.path)
        if self._follow is None:
            known = [s for s in self.known_sites if not s.layer.attrs.get("traced")]
            self._follow = find_followers(self.model, known, self.example_input)
        f = self._follow.get(id(layer.module))
        if f is None and self.example_input is None:
            raise ValueError(
                f"example_input: the layer {site.module_path!r} ({layer.type_name}) is not called in the forward "
                "torch.fx traced, so the activation after it is unknown; pass example_input=<a batch> or a rule "
                f"for {site.path!r}."
            )
        if f is None:
            raise ValueError(
                f"example_input: the layer {site.module_path!r} ({layer.type_name}) did not run when "
                "example_input went through the model, so the activation after it is unknown; pass an input "
                f"that reaches it, or a rule for {site.path!r}."
            )
        return f
