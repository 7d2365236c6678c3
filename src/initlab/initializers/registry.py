"""Look-up by name: Keras class names and aliases, torch/JAX extras, Keras config dicts."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from .base import Initializer
from .constant import Constant, Ones, Zeros
from .matrix import DeltaOrthogonal, Dirac, Identity, Orthogonal, Sparse
from .random import RandomNormal, RandomUniform, TruncatedNormal, TruncNormal
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

__all__ = ["CATALOGUE", "catalogue", "get", "register", "serialize"]

#: Keras 3's 16 initializer classes with the aliases Keras accepts, then what torch and JAX add.
_KERAS: dict[type[Initializer], tuple[str, ...]] = {
    Zeros: ("zeros", "zero"),
    Ones: ("ones", "one"),
    Constant: ("constant",),
    RandomNormal: ("random_normal", "normal"),
    RandomUniform: ("random_uniform", "uniform"),
    TruncatedNormal: ("truncated_normal",),
    VarianceScaling: ("variance_scaling",),
    GlorotNormal: ("glorot_normal",),
    GlorotUniform: ("glorot_uniform",),
    HeNormal: ("he_normal",),
    HeUniform: ("he_uniform",),
    LecunNormal: ("lecun_normal",),
    LecunUniform: ("lecun_uniform",),
    Orthogonal: ("orthogonal", "OrthogonalInitializer"),
    Identity: ("identity", "IdentityInitializer", "eye"),
    STFT: ("stft", "STFTInitializer"),
}
_EXTRAS: dict[type[Initializer], tuple[str, ...]] = {
    XavierUniform: ("xavier_uniform",),
    XavierNormal: ("xavier_normal",),
    KaimingUniform: ("kaiming_uniform",),
    KaimingNormal: ("kaiming_normal",),
    TruncNormal: ("trunc_normal",),
    TorchDefault: ("torch_default",),
    Dirac: ("dirac",),
    DeltaOrthogonal: ("delta_orthogonal",),
    Sparse: ("sparse",),
}

_BY_NAME: dict[str, type[Initializer]] = {}
#: class -> (origin, aliases), in catalogue order.
CATALOGUE: dict[type[Initializer], tuple[str, tuple[str, ...]]] = {}


def register(cls: type[Initializer], *aliases: str, origin: str = "user") -> type[Initializer]:
    """Make ``cls`` (and ``aliases``) known to :func:`get` and to config round trips."""
    if not (inspect.isclass(cls) and issubclass(cls, Initializer)):
        raise TypeError(f"cls: expected an Initializer subclass, got {cls!r}.")
    for key in (cls.__name__, *aliases):
        other = _BY_NAME.get(key)
        if other is not None and other is not cls:
            raise ValueError(f"name: {key!r} already names {other.__name__}.")
        _BY_NAME[key] = cls
    CATALOGUE[cls] = (origin, tuple(aliases))
    return cls


for _cls, _aliases in _KERAS.items():
    register(_cls, *_aliases, origin="keras")
for _cls, _aliases in _EXTRAS.items():
    register(_cls, *_aliases, origin="torch" if _cls not in (DeltaOrthogonal,) else "jax")


def catalogue() -> list[dict[str, Any]]:
    """One row per initializer: class name, origin (keras/torch/jax/user), aliases, first doc line."""
    rows = []
    for cls, (origin, aliases) in CATALOGUE.items():
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        rows.append({"name": cls.__name__, "origin": origin, "aliases": list(aliases), "summary": doc})
    return rows


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=3, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name.lower().strip(), [k.lower() for k in _BY_NAME], n=3, cutoff=0.6)
        close = [k for k in _BY_NAME if k.lower() in close][:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"identifier: unknown initializer {name!r}.{hint} Names are case-sensitive, as in Keras; "
        "`initlab list` (or initlab.catalogue()) shows them all."
    )


def get(identifier: Any) -> Initializer:
    """An :class:`Initializer` from a name, class name, Keras config dict, class or instance.

    >>> get("glorot_uniform")
    GlorotUniform(seed=None, input_axes=None, output_axes=None)
    >>> get({"class_name": "HeNormal", "config": {"seed": 5}})
    HeNormal(seed=5, input_axes=None, output_axes=None)
    """
    if isinstance(identifier, Initializer):
        return identifier
    if inspect.isclass(identifier) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            raise _unknown(identifier)
        return cls()
    if isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ValueError(
                "identifier: a config dict needs 'class_name' (and optionally 'config'), as Keras's "
                f"serialize() writes; got keys {sorted(identifier)}."
            )
        name = identifier["class_name"]
        if not isinstance(name, str):
            raise ValueError(f"identifier: 'class_name' must be a string, got {name!r}.")
        cls = _BY_NAME.get(name)
        if cls is None:
            raise _unknown(name)
        config = identifier.get("config") or {}
        return cls.from_config(config)
    raise TypeError(
        f"identifier: expected an initializer name (e.g. 'glorot_uniform'), a Keras config dict "
        f"{{'class_name': ..., 'config': {{...}}}}, an Initializer class or instance; got "
        f"{type(identifier).__name__} ({identifier!r})."
    )


def serialize(init: Initializer) -> dict[str, Any]:
    """Keras's serialized form: ``{'module', 'class_name', 'config', 'registered_name'}``."""
    init = get(init)
    origin = CATALOGUE.get(type(init), ("user", ()))[0]
    return {
        "module": "keras.initializers" if origin == "keras" else "initlab.initializers",
        "class_name": type(init).name,
        "config": init.get_config(),
        "registered_name": None if origin == "keras" else type(init).__name__,
    }
