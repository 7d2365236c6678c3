"""Keras 3's ``STFT`` initializer: a Conv1D kernel whose output is one side of a short-time Fourier
transform.

For a kernel of Keras shape (T, C, F) — frame length T, C input channels, F = n_fft/2 + 1 frequency
bins — entry (t, c, f) is

    w(t) · cos(−2π · t · f / (2(F − 1)))      (side="real")
    w(t) · sin(−2π · t · f / (2(F − 1)))      (side="imag")

with ``w`` the window ``scipy.signal.get_window(window, T, fftbins=periodic)`` divided by
√Σw² (``scaling="density"``) or Σ|w| (``scaling="spectrum"``), or 1 when ``window`` is None; the
same values for every input channel. This is the discrete Fourier basis (Allen 1977, "Short term
spectral analysis, synthesis, and modification by discrete Fourier transform"), as Keras's
``STFTSpectrogram`` layer uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import Initializer

__all__ = ["STFT"]

SIDES = ("real", "imag")
SCALINGS = ("density", "spectrum", None)


def _scipy_signal():
    try:
        import scipy.signal
    except ImportError:  # pragma: no cover - scipy ships with the dev/keras installs
        raise ImportError(
            "window: a named window needs scipy (scipy.signal.get_window, as Keras uses); "
            "pip install scipy, or pass the window values as a list, or window=None."
        ) from None
    return scipy.signal


class STFT(Initializer):
    """Keras ``STFT``: the real or imaginary part of the windowed DFT basis, for a (T, C, F) kernel.

    Keras layout (default here too, as for every Keras kernel): (T, C, F) = (frame, in, out);
    torch layout (a ``nn.Conv1d`` weight): (F, C, T). ``F`` must be ≥ 2 (Keras divides by
    2(F − 1) and returns NaN for F = 1). Deterministic: a seed is accepted and ignored.

    ``describe`` reports the exact empirical mean and variance of the entries.

    >>> k = STFT("real", window=None, scaling=None).sample((4, 1, 3), layout="keras")
    >>> k[:, 0, 0].tolist()   # frequency 0: cos(0) = 1 at every time step
    [1.0, 1.0, 1.0, 1.0]
    """

    name = "STFT"
    _config_keys = ("side", "window", "periodic", "scaling")
    min_rank = max_rank = 3
    random = False

    def __init__(
        self,
        side: str = "real",
        window: str | Sequence[float] | None = "hann",
        scaling: str | None = "density",
        periodic: bool = False,
    ) -> None:
        if side not in SIDES:
            raise ValueError(f"side: expected 'real' or 'imag', got {side!r}.")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling: expected 'density', 'spectrum' or None, got {scaling!r}.")
        if not isinstance(periodic, bool):
            raise ValueError(f"periodic: expected True or False, got {periodic!r}.")
        if isinstance(window, str):
            try:
                _scipy_signal().get_window(window, 1)
            except ValueError as e:
                raise ValueError(
                    f"window: {window!r} is not a scipy.signal window ({e}); use a name such as 'hann', "
                    "'hamming', 'blackman', a list of values, or None."
                ) from None
        elif window is not None:
            try:
                values = [float(v) for v in window]
            except (TypeError, ValueError):
                raise ValueError(
                    f"window: expected a scipy.signal window name, a 1-D sequence of numbers or None, "
                    f"got {window!r}."
                ) from None
            if not values or not all(math.isfinite(v) for v in values):
                raise ValueError(f"window: the values must be a non-empty list of finite numbers, got {window!r}.")
            window = values
        self.side, self.window, self.scaling, self.periodic = side, window, scaling, periodic

    def get_config(self) -> dict[str, Any]:
        window = list(self.window) if isinstance(self.window, list) else self.window
        return {"side": self.side, "window": window, "periodic": self.periodic, "scaling": self.scaling}

    def _dims(self, shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
        if layout == "keras":
            t, c, f = shape
        elif layout == "torch":
            f, c, t = shape
        else:
            raise ValueError(
                f"layout: STFT supports 'keras' (T, C, F) and 'torch' (F, C, T, a Conv1d weight), got {layout!r}."
            )
        if f < 2 or t < 1:
            raise ValueError(
                f"shape: STFT needs frame length T >= 1 and F >= 2 frequency bins (F = n_fft/2 + 1), got "
                f"T={t}, F={f} from shape {shape} in layout {layout!r}."
            )
        return t, c, f

    def kernel(self, frame_length: int, fft_bins: int) -> torch.Tensor:
        """The (T, F) float64 basis (the same for every input channel)."""
        t = torch.arange(frame_length, dtype=torch.float64).unsqueeze(1)
        freq = torch.arange(fft_bins, dtype=torch.float64).unsqueeze(0) / (2 * (fft_bins - 1))
        args = -2.0 * t * freq * math.pi
        k = torch.cos(args) if self.side == "real" else torch.sin(args)
        if self.window is None:
            return k
        if isinstance(self.window, str):
            win = torch.as_tensor(
                _scipy_signal().get_window(self.window, frame_length, self.periodic), dtype=torch.float64
            )
        else:
            win = torch.tensor(self.window, dtype=torch.float64)
            if win.numel() != frame_length:
                raise ValueError(
                    f"window: has {win.numel()} values but the frame length T is {frame_length}; "
                    "give exactly T values."
                )
        if self.scaling == "density":
            scale = win.square().sum().sqrt()
        elif self.scaling == "spectrum":
            scale = win.abs().sum()
        else:
            scale = torch.tensor(1.0, dtype=torch.float64)
        if not scale > 0:
            raise ValueError(f"window: sums to zero, so the {self.scaling!r} scaling divides by zero.")
        return k * win.unsqueeze(1) / scale

    def _describe(self, shape, layout, fans):
        t, _, f = self._dims(shape, layout)
        k = self.kernel(t, f)
        var = float(k.var(unbiased=False))
        win = "no window" if self.window is None else (
            f"{self.window} window" if isinstance(self.window, str) else "given window")
        return self._desc(shape, layout, fans, "stft", float(k.mean()), var, float(k.min()), float(k.max()),
                          f"{self.side} part of the {t}×{f} DFT basis, {win}, scaling {self.scaling}; "
                          f"entries' variance {var:.3g}",
                          side=self.side, window=self.window, scaling=self.scaling, periodic=self.periodic)

    def _fill(self, work, desc, gen):
        t, c, f = self._dims(tuple(work.shape), desc.layout)
        k = self.kernel(t, f).to(dtype=work.dtype, device=work.device)  # (T, F)
        if desc.layout == "keras":
            work.copy_(k.unsqueeze(1).expand(t, c, f))
        else:
            work.copy_(k.t().unsqueeze(1).expand(f, c, t))
