"""Dose-volume histograms as immutable values, with binless statistics.

A :class:`DVH` holds per-sample doses and the volume each sample stands for
(from :func:`~seedplan.evaluation.sampling.sample_mask_points`, or one
sample per voxel).  Statistics are computed from the doses sorted from
hottest to coldest, never from histogram bins; the definitions follow
``clinical_planning.md`` section 2:

* ``D(x)``: dose covering x % of the volume, the largest D with
  V{dose >= D} >= x % (``D(100)`` is the minimum dose, ``D(0)`` the maximum);
* ``D_cc(v)``: minimum dose to the hottest ``v`` cm^3 (D0.1cc, D1cc, D2cc);
* ``V(d)`` / ``V_cc(d)``: volume receiving >= d Gy, in % / cm^3.

With discrete samples ``D(x)`` and ``D_cc(v)`` are always one of the sample
doses (the hottest-first cumulative volume reaches the requested volume at
that sample); no interpolation is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _validate as v
from ..errors import InputError

__all__ = ["DVH", "dose_covering"]

# relative tolerance when comparing cumulative volumes with a requested volume
_RTOL = 1e-9


def _dose_reaching(dose_desc: np.ndarray, cum_volume: np.ndarray, volume: float) -> float:
    """The dose of the sample at which the hottest-first cumulative volume reaches ``volume``."""
    idx = int(np.searchsorted(cum_volume, volume * (1.0 - _RTOL), side="left"))
    return float(dose_desc[min(idx, dose_desc.size - 1)])


def dose_covering(dose_Gy: np.ndarray, weights: np.ndarray, volume: float) -> float:
    """Minimum dose to the hottest ``volume`` of a set of weighted samples (the statistic behind D_x and D_cc).

    The largest dose D such that the samples with dose >= D weigh at least
    ``volume`` (same unit as ``weights``); the smallest dose when ``volume``
    exceeds the total.  :class:`DVH` and the seed optimiser both use it, so
    D90 and D0.1cc have one definition.
    """
    order = np.argsort(-dose_Gy, kind="stable")
    return _dose_reaching(dose_Gy[order], np.cumsum(weights[order]), volume)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DVH:
    """Cumulative dose-volume histogram of one structure (binless).

    Build with :meth:`from_samples`.  Arrays are read-only.

    Attributes
    ----------
    name : str
        Structure name.
    dose_Gy : ndarray (N,)
        Sample doses sorted in decreasing order.
    weights_cm3 : ndarray (N,)
        Volume of each sample, same order.
    cum_volume_cm3 : ndarray (N,)
        ``cum_volume_cm3[n]`` = volume of the ``n + 1`` hottest samples.
    """

    name: str
    dose_Gy: np.ndarray
    weights_cm3: np.ndarray
    cum_volume_cm3: np.ndarray

    # ------------------------------------------------------------ constructor
    @classmethod
    def from_samples(cls, dose_Gy: Any, weights_cm3: Any = None, *, name: str = "structure") -> "DVH":
        """DVH from per-sample doses and volumes.

        Parameters
        ----------
        dose_Gy : array_like (N,)
            Dose at each sample, >= 0 and finite.
        weights_cm3 : array_like (N,) or scalar, optional
            Volume each sample represents (>= 0, total > 0).  A scalar is
            used for every sample; ``None`` means 1 cm^3 each.
        name : str
            Structure name (used in messages and reports).
        """
        d = np.asarray(dose_Gy, dtype=float).reshape(-1)
        if d.size == 0:
            raise InputError(f"dose_Gy of structure {name!r} is empty: a DVH needs at least one sample")
        if not np.all(np.isfinite(d)):
            raise InputError(f"dose_Gy of structure {name!r} contains NaN or infinite values")
        if np.any(d < 0):
            raise InputError(f"dose_Gy of structure {name!r} has negative values (min {d.min():.3g} Gy); doses must be >= 0")
        if weights_cm3 is None:
            w = np.ones_like(d)
        else:
            w = np.asarray(weights_cm3, dtype=float)
            if w.ndim == 0:
                w = np.full_like(d, float(w))
            w = w.reshape(-1)
            if w.shape != d.shape:
                raise InputError(
                    f"weights_cm3 of structure {name!r} has {w.size} values but dose_Gy has {d.size}"
                )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError(f"weights_cm3 of structure {name!r} must be finite and >= 0")
        if not w.sum() > 0:
            raise InputError(f"weights_cm3 of structure {name!r} sum to 0: the structure has no volume")
        order = np.argsort(-d, kind="stable")
        d, w = d[order], w[order]
        return cls(str(name), _readonly(d), _readonly(w), _readonly(np.cumsum(w)))

    # ---------------------------------------------------------------- scalars
    @property
    def volume_cm3(self) -> float:
        """Total structure volume (cm^3)."""
        return float(self.cum_volume_cm3[-1])

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.dose_Gy.size)

    @property
    def mean_Gy(self) -> float:
        """Volume-weighted mean dose."""
        # an elementwise product and NumPy's pairwise sum: no BLAS call (its threads stall on a busy machine)
        return float(np.add.reduce(self.dose_Gy * self.weights_cm3) / self.volume_cm3)

    @property
    def min_Gy(self) -> float:
        """Minimum sample dose (= D100)."""
        return float(self.dose_Gy[-1])

    @property
    def max_Gy(self) -> float:
        """Maximum sample dose (point Dmax; unstable near seeds, report with D0.1cc)."""
        return float(self.dose_Gy[0])

    # ----------------------------------------------------------------- Dx, Vx
    def _dose_at_volume(self, v_cm3: float) -> float:
        return _dose_reaching(self.dose_Gy, self.cum_volume_cm3, v_cm3)

    def D(self, percent: float) -> float:
        """Dose covering ``percent`` % of the volume (largest D with V{>=D} >= percent %).

        Parameters
        ----------
        percent : float
            In [0, 100]; ``D(90)`` is D90, ``D(100)`` the minimum, ``D(0)`` the maximum.
        """
        p = v.number(percent, "percent")
        if not 0.0 <= p <= 100.0:
            raise InputError(f"percent must be in [0, 100], got {percent!r}")
        return self._dose_at_volume(p / 100.0 * self.volume_cm3)

    def D_cc(self, volume_cm3: float) -> float:
        """Minimum dose to the hottest ``volume_cm3`` (D0.1cc, D1cc, D2cc...).

        If the structure is smaller than ``volume_cm3`` its minimum dose is
        returned (the hottest v cm^3 cannot be formed; callers that care
        should compare with :attr:`volume_cm3`).
        """
        vol = v.number(volume_cm3, "volume_cm3", lo=0.0)
        return self._dose_at_volume(min(vol, self.volume_cm3))

    def V_cc(self, dose_Gy: float) -> float:
        """Volume (cm^3) receiving at least ``dose_Gy``."""
        d = v.number(dose_Gy, "dose_Gy")
        # number of samples with dose >= d (dose_Gy is sorted decreasing)
        n = int(np.searchsorted(-self.dose_Gy, -d, side="right"))
        return float(self.cum_volume_cm3[n - 1]) if n > 0 else 0.0

    def V(self, dose_Gy: float) -> float:
        """Percentage of the volume receiving at least ``dose_Gy``."""
        return 100.0 * self.V_cc(dose_Gy) / self.volume_cm3

    # ------------------------------------------------------------- display
    def cumulative(
        self, bins_Gy: Any = None, *, reference_dose_Gy: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cumulative DVH sampled at dose edges, for display.

        Parameters
        ----------
        bins_Gy : array_like, optional
            Increasing dose edges.  Default: from 0 to just above the maximum
            dose in steps of 1 % of ``reference_dose_Gy`` when given (e.g. the
            prescription), else 0.5 Gy.
        reference_dose_Gy : float, optional
            Sets the default bin width.

        Returns
        -------
        dose_Gy : ndarray (M,)
            The edges.
        volume_cm3 : ndarray (M,)
            V{dose >= edge} in cm^3 (exact at each edge, from the samples).
        volume_pct : ndarray (M,)
            The same in % of the structure volume.
        """
        if bins_Gy is None:
            if reference_dose_Gy is not None:
                ref = v.number(reference_dose_Gy, "reference_dose_Gy")
                if ref <= 0:
                    raise InputError(f"reference_dose_Gy must be > 0, got {reference_dose_Gy!r}")
                step = 0.01 * ref
            else:
                step = 0.5
            n = int(np.floor(self.max_Gy / step)) + 2
            edges = np.arange(n) * step
        else:
            edges = np.asarray(bins_Gy, dtype=float).reshape(-1)
            if edges.size == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise InputError("bins_Gy must be a non-empty, finite, strictly increasing sequence of doses")
        n_ge = np.searchsorted(-self.dose_Gy, -edges, side="right")
        cum = np.concatenate([[0.0], self.cum_volume_cm3])
        vol = cum[n_ge]
        return _readonly(edges), _readonly(vol), _readonly(100.0 * vol / self.volume_cm3)

    def to_dict(self, bins_Gy: Any = None, *, reference_dose_Gy: float | None = None) -> dict:
        """JSON-friendly summary: name, volume and the binned cumulative curve."""
        e, v, p = self.cumulative(bins_Gy, reference_dose_Gy=reference_dose_Gy)
        return {
            "name": self.name,
            "volume_cm3": self.volume_cm3,
            "n_samples": self.n_samples,
            "dose_Gy": e.tolist(),
            "volume_cm3_ge": v.tolist(),
            "volume_pct_ge": p.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"DVH(name={self.name!r}, volume_cm3={self.volume_cm3:.4g}, n_samples={self.n_samples}, "
            f"min_Gy={self.min_Gy:.4g}, mean_Gy={self.mean_Gy:.4g}, max_Gy={self.max_Gy:.4g})"
        )
