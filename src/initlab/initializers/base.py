"""The :class:`Initializer` contract shared by the whole catalogue.

An initializer is a small object with a config (as in Keras) that

- ``describe(shape, layout)`` — states the law of its values (:class:`~initlab.initializers.description.Description`);
- ``init(tensor, seed=...)`` — fills a torch tensor in place, reading the fans in ``layout``;
- ``init.sample(shape, layout=..., seed=...)`` — returns a new tensor.

Seeds: an int gives the same values on every call, run and process (it is
``torch.Generator(device).manual_seed(seed)``, which is exactly what Keras 3's torch backend does for an
int seed); ``None`` draws fresh values from torch's global RNG on every call, so ``torch.manual_seed``
makes whole programs reproducible; a ``torch.Generator`` is used and advanced.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .description import Description
from .fans import Fans
from .fans import fans as compute_fans

__all__ = ["FLOAT_DTYPES", "Initializer", "Seed", "generator_for"]

Seed = int | torch.Generator | None

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_seed(seed: Any, name: str = "seed") -> None:
    if seed is None or isinstance(seed, torch.Generator):
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"{name}: expected an int, a torch.Generator or None, got {type(seed).__name__} ({seed!r})."
        )
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"{name}: {seed} does not fit in 64 bits; use an int in [-2**63, 2**64).")


def generator_for(seed: Seed, device: torch.device | str) -> torch.Generator | None:
    """The generator a fill uses: ``None`` means torch's global RNG."""
    if seed is None:
        return None
    if isinstance(seed, torch.Generator):
        if torch.device(seed.device).type != torch.device(device).type:
            raise ValueError(
                f"seed: the torch.Generator is on {seed.device} but the tensor is on {device}; "
                f"pass a generator created with torch.Generator(device={str(device)!r})."
            )
        return seed
    return torch.Generator(device=device).manual_seed(seed)


class Initializer(abc.ABC):
    """Base class. Subclasses set ``_config_keys`` and implement ``_describe`` and ``_fill``.

    ``_fill(work, description, generator)`` writes into ``work``, a contiguous float32 or float64
    tensor of the target shape on the target device; the base class converts dtypes, handles
    non-contiguous targets and autograd leaves, and validates input.
    """

    #: Keras class name (also the registry key).
    name: ClassVar[str] = "Initializer"
    #: Constructor arguments that ``get_config`` returns.
    _config_keys: ClassVar[tuple[str, ...]] = ()
    #: Which layouts the initializer reads; ``None`` means it needs no fans.
    needs_fans: ClassVar[bool] = False
    #: Smallest rank the initializer can fill (a weight-only initializer such as Orthogonal says 2).
    min_rank: ClassVar[int] = 0
    max_rank: ClassVar[int | None] = None
    #: Does it draw random numbers? (Zeros does not; a seed is then accepted and ignored.)
    random: ClassVar[bool] = True

    seed: Seed = None

    # -- public API -------------------------------------------------------------------------------

    def describe(
        self,
        shape: Sequence[int],
        layout: str = "torch",
        *,
        groups: int = 1,
        fans: Fans | tuple[int, int] | None = None,
    ) -> Description:
        """The law of the values this initializer gives ``shape`` in ``layout`` (see :func:`initlab.describe`)."""
        shape = self._check_shape(shape)
        f = self._fans(shape, layout, groups, fans)
        return self._describe(shape, layout, f)

    def __call__(
        self,
        tensor: torch.Tensor,
        *,
        seed: Seed = None,
        layout: str = "torch",
        groups: int = 1,
        fans: Fans | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Fill ``tensor`` in place and return it. ``seed`` overrides the constructor's seed."""
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"tensor: expected a torch.Tensor to fill in place, got {type(tensor).__name__}; "
                f"use {type(self).__name__}(...).sample(shape) for a new tensor."
            )
        if tensor.device.type == "meta":
            raise ValueError(
                "tensor: is on the meta device, so there is nothing to fill. Materialize it first "
                "(module.to_empty(device='cpu')) or use initlab.plan(model).apply(), which does both."
            )
        if tensor.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"tensor: has dtype {tensor.dtype}; initializers fill floating tensors only "
                "(float32, float64, float16 or bfloat16)."
            )
        seed = self.seed if seed is None else seed
        _check_seed(seed)
        desc = self.describe(tuple(tensor.shape), layout, groups=groups, fans=fans)
        gen = generator_for(seed, tensor.device)
        work_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        direct = tensor.is_contiguous() and tensor.dtype == work_dtype
        with torch.no_grad():
            work = tensor if direct else torch.empty(tensor.shape, dtype=work_dtype, device=tensor.device)
            self._fill(work, desc, gen)
            if not direct:
                tensor.copy_(work)
                if tensor.dtype in (torch.float16, torch.bfloat16) and math.isfinite(desc.high):
                    # Rounding to a coarse dtype may step one ulp past a bound; keep the promise.
                    tensor.clamp_(_round_in(desc.low, tensor.dtype, up=True), _round_in(desc.high, tensor.dtype))
        return tensor

    def sample(
        self,
        shape: Sequence[int],
        *,
        layout: str = "torch",
        seed: Seed = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        groups: int = 1,
        fans: Fans | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """A new tensor of ``shape`` filled by this initializer."""
        shape = self._check_shape(shape)
        if str(torch.device(device)) == "meta":
            raise ValueError("device: 'meta' tensors hold no values to sample; use a real device such as 'cpu'.")
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype: expected one of {', '.join(map(str, FLOAT_DTYPES))}, got {dtype}.")
        out = torch.empty(shape, dtype=dtype, device=device)
        return self(out, seed=seed, layout=layout, groups=groups, fans=fans)

    def fill_cannot_fail(self) -> bool:
        """Whether ``_fill`` is one allocation-free in-place pass (``zero_``, ``fill_``, ``uniform_``,
        ``normal_``) that cannot raise once ``describe`` accepted the shape and the seed is valid.
        ``Plan.apply`` fills such entries in place without losing all-or-nothing. Default: no."""
        return False

    def counter_law(
        self,
        shape: Sequence[int],
        layout: str = "torch",
        *,
        groups: int = 1,
        fans: Fans | tuple[int, int] | None = None,
    ) -> Any:
        """The law a counter-based fill draws for ``shape`` (:mod:`initlab.initializers.counter_fill`): a
        ``UniformLaw``, ``NormalLaw``, … whose values at each element depend on the seed and that element's
        global index only — or ``None`` when the values need the whole tensor (an orthogonal matrix) or
        the class cannot vouch for them.

        A class vouches through ``_counter_law`` only where the same class defines ``_fill``: a subclass
        that overrides ``_fill`` (a user's variant of ``RandomNormal``) inherits no counter law, so a
        sharded fill never replaces its values with its parent's law.

        >>> from initlab.initializers import GlorotUniform, Orthogonal
        >>> GlorotUniform().counter_law((250, 16), "keras")
        UniformLaw(low=-0.15018785229652765, high=0.15018785229652765)
        >>> Orthogonal().counter_law((16, 16)) is None
        True
        """
        mro = type(self).__mro__
        owner = next(c for c in mro if "_counter_law" in c.__dict__)
        if owner is not next(c for c in mro if "_fill" in c.__dict__):
            return None
        return self._counter_law(self.describe(shape, layout, groups=groups, fans=fans))

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as in Keras's ``get_config``."""
        return {k: getattr(self, k) for k in self._config_keys}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Initializer:
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict of constructor arguments, got {type(config).__name__}.")
        unknown = set(config) - set(cls._config_keys)
        if unknown:
            raise ValueError(
                f"config: {cls.name} takes {sorted(cls._config_keys) or 'no arguments'}, "
                f"not {sorted(unknown)}."
            )
        return cls(**config)

    def clone(self) -> Initializer:
        return type(self).from_config(self.get_config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items(), key=lambda kv: kv[0]))))

    # -- for subclasses ---------------------------------------------------------------------------

    @abc.abstractmethod
    def _describe(self, shape: tuple[int, ...], layout: str, fans: Fans | None) -> Description: ...

    @abc.abstractmethod
    def _fill(self, work: torch.Tensor, desc: Description, gen: torch.Generator | None) -> None: ...

    def _counter_law(self, desc: Description) -> Any:
        """The counter-based law of ``desc`` (see :meth:`counter_law`); ``None``: none."""
        return None

    def _desc(self, shape, layout, fans, family, mean, variance, low, high, formula, /, **params) -> Description:
        return Description(
            initializer=type(self).__name__,
            family=family,
            shape=tuple(shape),
            layout=layout,
            fans=fans,
            mean=float(mean),
            variance=float(variance),
            low=float(low),
            high=float(high),
            formula=formula,
            params=params,
        )

    def _check_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError:
            raise TypeError(f"shape: expected a sequence of ints such as (16, 250), got {shape!r}.") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"shape: {shape} has a negative dimension.")
        rank = len(shape)
        if rank < self.min_rank or (self.max_rank is not None and rank > self.max_rank):
            want = (
                f"exactly {self.min_rank}"
                if self.max_rank == self.min_rank
                else f"{self.min_rank} to {self.max_rank}"
                if self.max_rank is not None
                else f"at least {self.min_rank}"
            )
            raise ValueError(
                f"shape: {type(self).__name__} needs a tensor of rank {want}, got shape {shape} "
                f"(rank {rank})."
            )
        return shape

    def _fans(
        self, shape: tuple[int, ...], layout: str, groups: int, given: Fans | tuple[int, int] | None
    ) -> Fans | None:
        if given is not None:
            if isinstance(given, Fans):
                return given
            try:
                fi, fo = given
                if int(fi) < 1 or int(fo) < 1:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"fans: expected a Fans or a (fan_in, fan_out) pair of ints >= 1, got {given!r}."
                ) from None
            return Fans(int(fi), int(fo), 1)
        if not self.needs_fans:
            if layout not in _layouts():
                raise ValueError(f"layout: expected one of {', '.join(map(repr, _layouts()))}, got {layout!r}.")
            return None
        return compute_fans(shape, layout, groups=groups, **self._axes())

    def _axes(self) -> dict[str, Any]:
        return {}


def _layouts() -> tuple[str, ...]:
    from .fans import LAYOUTS

    return tuple(LAYOUTS)


def _round_in(x: float, dtype: torch.dtype, up: bool = False) -> float:
    """The representable value of ``dtype`` nearest ``x`` on the inside of the bound."""
    t = torch.tensor(x, dtype=torch.float64)
    r = t.to(dtype).to(torch.float64)
    if (not up and r > t) or (up and r < t):
        target = torch.tensor(-math.inf if not up else math.inf, dtype=dtype)
        r = torch.nextafter(t.to(dtype), target).to(torch.float64)
    return float(r)
