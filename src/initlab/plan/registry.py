"""The preset registry: :func:`register_preset`, the typed :class:`PresetOption` s a preset declares, and
the checks :func:`initlab.plan` runs on a preset's name and options before anything else."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import PresetContext

__all__ = [
    "PRESETS",
    "PresetOption",
    "PresetSpec",
    "preset_names",
    "preset_options",
    "register_preset",
    "resolve_options",
]


_KINDS = ("bool", "nonnegative", "object")


@dataclass(frozen=True)
class PresetOption:
    """One typed option of a preset: its ``name``, ``default`` and ``doc``, and what it accepts —
    exactly one of the values in ``choices``, or a value of ``kind`` ``"bool"`` (True/False) or
    ``"nonnegative"`` (a finite number >= 0, stored as float), or kind ``"object"`` (anything ``validate``
    accepts: ``validate(value)`` returns the value the preset sees, or raises ``ValueError``/``TypeError``
    saying what is wrong — the message is prefixed with the option's name; ``valid`` says what is right).

    >>> PresetOption("saturating", "glorot", "what tanh layers get", choices=("glorot", "critical")).check("critical")
    'critical'
    """

    name: str
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    kind: str | None = None
    validate: Callable[[Any], Any] | None = None
    valid_text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name: an option name must be an identifier string, got {self.name!r}.")
        if (self.choices is None) == (self.kind is None):
            raise ValueError(f"option {self.name!r}: give exactly one of choices=(...) or kind= (one of "
                             f"{', '.join(map(repr, _KINDS))}); got choices={self.choices!r}, kind={self.kind!r}.")
        if self.kind is not None and self.kind not in _KINDS:
            raise ValueError(f"kind: option {self.name!r} has kind {self.kind!r}; valid kinds: "
                             f"{', '.join(map(repr, _KINDS))}.")
        if (self.kind == "object") != (self.validate is not None):
            raise ValueError(f"option {self.name!r}: kind='object' needs validate=<callable>, and only it takes "
                             f"one; got kind={self.kind!r}, validate={self.validate!r}.")
        if self.choices is not None and not self.choices:
            raise ValueError(f"choices: option {self.name!r} needs at least one valid value.")
        self.check(self.default)

    @property
    def valid(self) -> str:
        """What the option accepts, in words."""
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.kind == "object":
            return self.valid_text or "what the option's doc describes"
        return "True or False" if self.kind == "bool" else "a finite number >= 0"

    def check(self, value: Any) -> Any:
        """``value`` as the preset will see it; raises naming the option, the value and what is valid."""
        bad = ValueError(f"options[{self.name!r}]: expected {self.valid}, got {value!r}.")
        if self.choices is not None:
            for c in self.choices:
                if type(value) is type(c) and value == c:
                    return c
            raise bad
        if self.kind == "object":
            try:
                return self.validate(value)
            except (ValueError, TypeError) as e:
                tag = f"options[{self.name!r}]"
                raise type(e)(str(e) if str(e).startswith(tag) else f"{tag}: {e}") from e
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise bad
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad
        return float(value)


@dataclass(frozen=True)
class PresetSpec:
    name: str
    fn: Callable[[PresetContext], None]
    description: str = ""
    needs_example_input: bool = False
    options: tuple[PresetOption, ...] = ()


PRESETS: dict[str, PresetSpec] = {}


def register_preset(
    name: str,
    fn: Callable[[PresetContext], None],
    *,
    description: str = "",
    needs_example_input: bool = False,
    replace: bool = False,
    options: Sequence[PresetOption] = (),
) -> Callable[[PresetContext], None]:
    """Make ``fn`` available as ``initlab.plan(model, preset=name)``.

    ``fn(ctx)`` records choices on a :class:`PresetContext` (see the module docstring);
    ``needs_example_input=True`` makes :func:`initlab.plan` reject a call without ``example_input``
    before anything runs. ``options``: the :class:`PresetOption` s the preset accepts; ``plan(...,
    options={...})`` checks what it is given against them and ``fn`` reads ``ctx.options`` (every
    declared name, defaults filled in). Re-registering a name is an error unless ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: a preset needs a non-empty string name, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable fn(ctx: PresetContext) -> None, got {type(fn).__name__}.")
    if name in PRESETS and not replace:
        raise ValueError(f"name: preset {name!r} is already registered; pass replace=True to redefine it.")
    opts = tuple(options)
    for o in opts:
        if not isinstance(o, PresetOption):
            raise TypeError(f"options: expected PresetOption objects, got {type(o).__name__} ({o!r}).")
    names = [o.name for o in opts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"options: preset {name!r} declares {', '.join(map(repr, dup))} more than once.")
    PRESETS[name] = PresetSpec(name, fn, description, needs_example_input, opts)
    return fn


def preset_names() -> list[str]:
    """The registered preset names."""
    return list(PRESETS)


def preset_options(name: str) -> dict[str, PresetOption]:
    """The options preset ``name`` accepts, by name (empty for a preset without options).

    >>> sorted(preset_options("auto"))
    ['deepnet_alpha', 'dense', 'orthogonal', 'residual', 'saturating', 'sigma_b2', 'smooth']
    """
    return {o.name: o for o in _get_preset(name).options}


def _options_summary(spec: PresetSpec) -> str:
    return "; ".join(f"{o.name!r} ({o.valid}, default {o.default!r})" for o in spec.options)


def resolve_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` for preset ``name`` checked (:meth:`PresetOption.check`) and completed with the
    defaults. Raises ``TypeError`` for a non-dict and ``ValueError`` for an unknown name or bad value,
    naming it and listing what is valid."""
    spec = _get_preset(name)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options: expected a dict {{option name: value}}, got {type(options).__name__} "
                        f"({options!r}).")
    declared = {o.name: o for o in spec.options}
    unknown = [k for k in options if k not in declared]
    if unknown:
        if not declared:
            with_opts = [p.name for p in PRESETS.values() if p.options]
            raise ValueError(
                f"options: preset {name!r} takes no options, got {', '.join(map(repr, unknown))}; presets with "
                f"options: {', '.join(map(repr, with_opts)) or 'none'}."
            )
        raise ValueError(
            f"options: preset {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{_options_summary(spec)}."
        )
    return {n: (o.check(options[n]) if n in options else o.default) for n, o in declared.items()}


def _get_preset(name: str) -> PresetSpec:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; registered presets: {', '.join(map(repr, PRESETS))}.")
    return PRESETS[name]
