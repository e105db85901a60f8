"""Seed models: the TG-43 dataset of one seed type, validated on load.

A seed model file is JSON in the ``seedplan-seed-model/1`` format::

    {"format": "seedplan-seed-model/1",
     "name": "6711", "description": "...", "radionuclide": "I-125",
     "half_life_d": 59.40, "U_per_mCi": 1.270, "verified": true,
     "dose_rate_constant_cGy_h_U": 0.965, "active_length_cm": 0.30,
     "capsule": {"length_mm": 4.55, "diameter_mm": 0.8},
     "radial_dose_function": {"r_cm": [...], "g_L": [...]},
     "radial_dose_function_point": {"r_cm": [...], "g_P": [...]},   # optional
     "anisotropy_function": {"r_cm": [...], "theta_deg": [...], "F": [[...], ...]},
     "anisotropy_factor": {"r_cm": [...], "phi_an": [...]},          # optional
     "provenance": {...}}                                              # free-form

TG-43 tables stay in cm, as published; the dose kernels convert once.
Missing optional tables are derived from the others (and flagged):
``g_P`` from ``g_L`` with the geometry-function ratio (TG-43U1 Eq. 11
conversion) and ``phi_an`` by solid-angle integration of the 2D dose rate
(TG-43U1 Eq. 10).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._atomic import read_json
from .. import _validate as v
from ..errors import InputError, SeedModelError

FORMAT = "seedplan-seed-model/1"

_REQUIRED = {
    "format",
    "name",
    "description",
    "radionuclide",
    "half_life_d",
    "U_per_mCi",
    "dose_rate_constant_cGy_h_U",
    "active_length_cm",
    "capsule",
    "radial_dose_function",
    "anisotropy_function",
}
_OPTIONAL = {"verified", "radial_dose_function_point", "anisotropy_factor", "provenance"}

#: Tolerance on the normalisations g_L(1 cm) = 1 and F(r, 90 deg) = 1.
NORMALISATION_TOL = 0.005

_BUILTIN = {"6711": "6711.json", "2301": "2301.json", "6733": "6733.json", "IAI-125A": "iai-125a.json"}
_ALIASES = {
    "6711": "6711",
    "oncoseed": "6711",
    "oncoseed6711": "6711",
    "amersham6711": "6711",
    "2301": "2301",
    "best2301": "2301",
    "6733": "6733",
    "echoseed": "6733",
    "echoseed6733": "6733",
    "iai125a": "IAI-125A",
    "isoaid": "IAI-125A",
}


def _f(x: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in x)


@dataclass(frozen=True)
class SeedModel:
    """The TG-43 dataset of one seed model.

    Attributes use TG-43 units: radii in cm, angles in degrees, the
    dose-rate constant in cGy h^-1 U^-1.  Build one with
    :func:`load_seed_model` or :func:`read_seed_model_file`, which validate.
    """

    name: str
    description: str
    radionuclide: str
    half_life_d: float
    U_per_mCi: float
    dose_rate_constant_cGy_h_U: float
    active_length_cm: float
    capsule_length_mm: float
    capsule_diameter_mm: float
    g_r_cm: tuple[float, ...]
    g_L: tuple[float, ...]
    gP_r_cm: tuple[float, ...]
    g_P: tuple[float, ...]
    F_r_cm: tuple[float, ...]
    F_theta_deg: tuple[float, ...]
    F: tuple[tuple[float, ...], ...]
    phi_r_cm: tuple[float, ...]
    phi_an: tuple[float, ...]
    verified: bool = True
    g_P_derived: bool = False
    phi_an_derived: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    # ------------------------------------------------------------ conveniences
    @property
    def active_length_mm(self) -> float:
        """Effective active length L used in the geometry function, in mm."""
        return 10.0 * self.active_length_cm

    @property
    def mean_life_h(self) -> float:
        """Mean life tau = T_half / ln 2 in hours."""
        return self.half_life_d * 24.0 / math.log(2.0)

    @property
    def status(self) -> str:
        """``"verified"`` or ``"UNVERIFIED"`` as printed in reports."""
        return "verified" if self.verified else "UNVERIFIED"

    @property
    def citation(self) -> str:
        """The primary reference of the dataset."""
        p = self.provenance
        return str(p.get("primary_reference") or p.get("dataset") or "")

    def with_U_per_mCi(self, U_per_mCi: float) -> "SeedModel":
        """A copy with another apparent-activity conversion factor (U per mCi)."""
        _positive(U_per_mCi, "U_per_mCi")
        return replace(self, U_per_mCi=float(U_per_mCi))

    def summary(self) -> str:
        """One line naming the model, its dataset and its verification status."""
        flags = []
        if not self.verified:
            flags.append("UNVERIFIED")
        if self.phi_an_derived:
            flags.append("phi_an derived from F")
        if self.g_P_derived:
            flags.append("g_P derived from g_L")
        extra = f" [{'; '.join(flags)}]" if flags else ""
        return (
            f"{self.name}: {self.description}; Lambda = {self.dose_rate_constant_cGy_h_U:.3f} cGy/h/U, "
            f"L = {self.active_length_cm:.2f} cm, T1/2 = {self.half_life_d:.2f} d{extra}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The model in the ``seedplan-seed-model/1`` JSON layout."""
        d: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "radionuclide": self.radionuclide,
            "half_life_d": self.half_life_d,
            "U_per_mCi": self.U_per_mCi,
            "verified": self.verified,
            "dose_rate_constant_cGy_h_U": self.dose_rate_constant_cGy_h_U,
            "active_length_cm": self.active_length_cm,
            "capsule": {"length_mm": self.capsule_length_mm, "diameter_mm": self.capsule_diameter_mm},
            "radial_dose_function": {"r_cm": list(self.g_r_cm), "g_L": list(self.g_L)},
            "anisotropy_function": {
                "r_cm": list(self.F_r_cm),
                "theta_deg": list(self.F_theta_deg),
                "F": [list(row) for row in self.F],
            },
            "provenance": dict(self.provenance),
        }
        if not self.g_P_derived:
            d["radial_dose_function_point"] = {"r_cm": list(self.gP_r_cm), "g_P": list(self.g_P)}
        if not self.phi_an_derived:
            d["anisotropy_factor"] = {"r_cm": list(self.phi_r_cm), "phi_an": list(self.phi_an)}
        return d


# ---------------------------------------------------------------- validation
def _positive(value: Any, name: str) -> float:
    try:
        return v.number(value, name, lo=0.0, lo_open=True)
    except InputError as exc:  # a seed model's own error class, same message
        raise SeedModelError(str(exc)) from None


def _array(obj: Mapping[str, Any], key: str, where: str) -> np.ndarray:
    if key not in obj:
        raise SeedModelError(f"{where}.{key} is missing")
    try:
        arr = np.asarray(obj[key], dtype=float)
    except (TypeError, ValueError):
        raise SeedModelError(f"{where}.{key} must be a list of numbers") from None
    if arr.size == 0:
        raise SeedModelError(f"{where}.{key} is empty")
    if not np.all(np.isfinite(arr)):
        raise SeedModelError(f"{where}.{key} contains non-finite values")
    if np.any(arr < 0):
        raise SeedModelError(f"{where}.{key} contains negative values; TG-43 quantities are >= 0")
    return arr


def _increasing(arr: np.ndarray, where: str) -> None:
    if arr.ndim != 1 or arr.size < 2 or np.any(np.diff(arr) <= 0):
        raise SeedModelError(f"{where} must be a strictly increasing list of at least 2 values, got {arr.tolist()}")


def _table(obj: Any, where: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise SeedModelError(f"{where} must be an object with keys {list(keys)}")
    unknown = set(obj) - set(keys)
    if unknown:
        raise SeedModelError(f"{where} has unknown keys {sorted(unknown)}; valid keys are {list(keys)}")
    return obj


def seed_model_from_dict(data: Mapping[str, Any], *, source: str = "seed model") -> SeedModel:
    """Validate a ``seedplan-seed-model/1`` mapping and build a :class:`SeedModel`.

    Raises
    ------
    SeedModelError
        Naming the offending field: missing or unknown keys, non-increasing
        radii or angles, negative values, ``g_L(1 cm) != 1`` or
        ``F(r, 90 deg) != 1`` beyond :data:`NORMALISATION_TOL`.
    """
    if not isinstance(data, Mapping):
        raise SeedModelError(f"{source}: the top level must be a JSON object")
    unknown = set(data) - _REQUIRED - _OPTIONAL
    if unknown:
        raise SeedModelError(f"{source}: unknown keys {sorted(unknown)}; valid keys are {sorted(_REQUIRED | _OPTIONAL)}")
    missing = _REQUIRED - set(data)
    if missing:
        raise SeedModelError(f"{source}: missing keys {sorted(missing)}")
    if data["format"] != FORMAT:
        raise SeedModelError(f"{source}: format must be {FORMAT!r}, got {data['format']!r}")

    def err(msg: str) -> SeedModelError:
        return SeedModelError(f"{source}: {msg}")

    try:
        half_life = _positive(data["half_life_d"], "half_life_d")
        u_per_mci = _positive(data["U_per_mCi"], "U_per_mCi")
        lam = _positive(data["dose_rate_constant_cGy_h_U"], "dose_rate_constant_cGy_h_U")
        length = _positive(data["active_length_cm"], "active_length_cm")
        cap = _table(data["capsule"], "capsule", ("length_mm", "diameter_mm"))
        cap_len = _positive(cap.get("length_mm"), "capsule.length_mm")
        cap_dia = _positive(cap.get("diameter_mm"), "capsule.diameter_mm")
        if 10.0 * length >= cap_len:
            raise SeedModelError(
                f"active_length_cm ({length} cm) must be shorter than capsule.length_mm ({cap_len} mm): "
                "the active source lies inside the capsule"
            )

        g = _table(data["radial_dose_function"], "radial_dose_function", ("r_cm", "g_L"))
        g_r = _array(g, "r_cm", "radial_dose_function")
        g_l = _array(g, "g_L", "radial_dose_function")
        _increasing(g_r, "radial_dose_function.r_cm")
        if g_l.shape != g_r.shape:
            raise SeedModelError("radial_dose_function.g_L must have one value per r_cm")
        if np.any(g_l <= 0):
            raise SeedModelError("radial_dose_function.g_L must be > 0 (log-linear interpolation)")
        g1 = _interp_log(1.0, g_r, g_l)
        if abs(g1 - 1.0) > NORMALISATION_TOL:
            raise SeedModelError(f"radial_dose_function.g_L(1 cm) must be 1 (TG-43 normalisation), got {g1:.4f}")

        fa = _table(data["anisotropy_function"], "anisotropy_function", ("r_cm", "theta_deg", "F"))
        f_r = _array(fa, "r_cm", "anisotropy_function")
        f_t = _array(fa, "theta_deg", "anisotropy_function")
        f_tab = _array(fa, "F", "anisotropy_function")
        _increasing(f_r, "anisotropy_function.r_cm") if f_r.size > 1 else None
        _increasing(f_t, "anisotropy_function.theta_deg")
        if f_t[0] != 0.0 or f_t[-1] > 90.0:
            raise SeedModelError("anisotropy_function.theta_deg must start at 0 and end at most at 90 deg (mirrored beyond)")
        if f_tab.shape != (f_r.size, f_t.size):
            raise SeedModelError(
                f"anisotropy_function.F must be {f_r.size} rows (r_cm) x {f_t.size} columns (theta_deg), got {list(f_tab.shape)}"
            )
        if f_t[-1] == 90.0:
            bad = np.abs(f_tab[:, -1] - 1.0) > NORMALISATION_TOL
            if np.any(bad):
                r_bad = f_r[bad].tolist()
                raise SeedModelError(f"anisotropy_function.F(r, 90 deg) must be 1 (TG-43 normalisation); not so at r_cm={r_bad}")
        else:
            f_t = np.append(f_t, 90.0)
            f_tab = np.hstack([f_tab, np.ones((f_r.size, 1))])

        verified = data.get("verified", True)
        if not isinstance(verified, bool):
            raise SeedModelError("verified must be true or false")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SeedModelError("provenance must be an object")

        g_p_derived = "radial_dose_function_point" not in data
        if g_p_derived:
            gp_r = g_r
            gp = g_l * _geometry_line_transverse(gp_r, length) * gp_r**2 / _geometry_line_transverse(np.array([1.0]), length)[0]
        else:
            gpt = _table(data["radial_dose_function_point"], "radial_dose_function_point", ("r_cm", "g_P"))
            gp_r = _array(gpt, "r_cm", "radial_dose_function_point")
            gp = _array(gpt, "g_P", "radial_dose_function_point")
            _increasing(gp_r, "radial_dose_function_point.r_cm")
            if gp.shape != gp_r.shape or np.any(gp <= 0):
                raise SeedModelError("radial_dose_function_point.g_P must have one value > 0 per r_cm")

        phi_derived = "anisotropy_factor" not in data
        if phi_derived:
            phi_r = f_r.copy()
            phi = derive_phi_an(phi_r, length, f_r, f_t, f_tab)
        else:
            pa = _table(data["anisotropy_factor"], "anisotropy_factor", ("r_cm", "phi_an"))
            phi_r = _array(pa, "r_cm", "anisotropy_factor")
            phi = _array(pa, "phi_an", "anisotropy_factor")
            if phi_r.size > 1:
                _increasing(phi_r, "anisotropy_factor.r_cm")
            if phi.shape != phi_r.shape or np.any(phi <= 0):
                raise SeedModelError("anisotropy_factor.phi_an must have one value > 0 per r_cm")
    except SeedModelError as exc:
        if str(exc).startswith(source):
            raise
        raise err(str(exc)) from None

    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise err("name must be a non-empty string")
    return SeedModel(
        name=name,
        description=str(data["description"]),
        radionuclide=str(data["radionuclide"]),
        half_life_d=half_life,
        U_per_mCi=u_per_mci,
        dose_rate_constant_cGy_h_U=lam,
        active_length_cm=length,
        capsule_length_mm=cap_len,
        capsule_diameter_mm=cap_dia,
        g_r_cm=_f(g_r),
        g_L=_f(g_l),
        gP_r_cm=_f(gp_r),
        g_P=_f(gp),
        F_r_cm=_f(f_r),
        F_theta_deg=_f(f_t),
        F=tuple(_f(row) for row in f_tab),
        phi_r_cm=_f(phi_r),
        phi_an=_f(phi),
        verified=verified,
        g_P_derived=g_p_derived,
        phi_an_derived=phi_derived,
        provenance=dict(provenance),
    )


# ------------------------------------------------- table helpers (NumPy, exact)
def _interp_log(r: float, r_nodes: np.ndarray, g_nodes: np.ndarray) -> float:
    """Log-linear interpolation of g at one radius (inside the table)."""
    return float(np.exp(np.interp(r, r_nodes, np.log(g_nodes))))


def _geometry_line_transverse(r_cm: np.ndarray, length_cm: float) -> np.ndarray:
    """G_L(r, 90 deg) = 2 atan(L / 2r) / (L r)."""
    r = np.asarray(r_cm, dtype=float)
    return 2.0 * np.arctan(length_cm / (2.0 * r)) / (length_cm * r)


def derive_phi_an(
    r_cm: np.ndarray, length_cm: float, F_r_cm: np.ndarray, F_theta_deg: np.ndarray, F: np.ndarray
) -> np.ndarray:
    """1D anisotropy function from the 2D data by solid-angle integration.

    phi_an(r) = (1/2) * integral_0^pi [G_L(r,theta) / G_L(r,90 deg)] F(r,theta) sin(theta) dtheta
    (TG-43U1 Eq. 10 with the 2D dose rate of Eq. 1; g_L(r) cancels).
    F is bilinear in (r, theta), nearest neighbour in r outside the table.
    """
    theta = np.linspace(0.0, np.pi, 3601)
    deg = np.degrees(theta)
    folded = np.where(deg > 90.0, 180.0 - deg, deg)
    out = np.empty(len(r_cm))
    for n, r in enumerate(np.asarray(r_cm, dtype=float)):
        rr = min(max(r, F_r_cm[0]), F_r_cm[-1])
        f_at_r = np.array([np.interp(rr, F_r_cm, F[:, j]) for j in range(F.shape[1])])
        f_theta = np.interp(folded, F_theta_deg, f_at_r)
        z = r * np.cos(theta)
        y = r * np.sin(theta)
        beta = np.arctan2(y, z - length_cm / 2) - np.arctan2(y, z + length_cm / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(y > 1e-12, beta / (length_cm * np.maximum(y, 1e-300)), 1.0 / (r * r - length_cm**2 / 4))
        g90 = _geometry_line_transverse(np.array([r]), length_cm)[0]
        integrand = g / g90 * f_theta * np.sin(theta)
        out[n] = 0.5 * np.trapezoid(integrand, theta)
    return out


# ------------------------------------------------------------------- loaders
def available_seed_models() -> list[str]:
    """Names of the seed models shipped with seedplan."""
    return list(_BUILTIN)


def _canonical(name: str) -> str | None:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    if key in _ALIASES:
        return _ALIASES[key]
    for builtin in _BUILTIN:
        if key == "".join(ch for ch in builtin.lower() if ch.isalnum()):
            return builtin
    return None


_CACHE: dict[str, SeedModel] = {}


def load_seed_model(name: "str | SeedModel | Path") -> SeedModel:
    """Return a seed model by name (``"6711"``, ``"2301"``, ``"6733"``, ``"IAI-125A"``) or from a JSON file.

    A :class:`SeedModel` passes through unchanged.  Names are matched
    case-insensitively, ignoring punctuation.
    """
    if isinstance(name, SeedModel):
        return name
    if isinstance(name, Path) or (isinstance(name, str) and name.lower().endswith(".json")):
        return read_seed_model_file(name)
    if not isinstance(name, str):
        raise SeedModelError(f"source must be a seed model name, a SeedModel or a .json path, got {type(name).__name__}")
    canonical = _canonical(name)
    if canonical is None:
        raise SeedModelError(
            f"unknown seed model {name!r}; available: {', '.join(available_seed_models())} "
            "(or give the path of a seedplan-seed-model/1 JSON file)"
        )
    if canonical not in _CACHE:
        text = resources.files("seedplan.sources").joinpath("data", _BUILTIN[canonical]).read_text(encoding="utf-8")
        _CACHE[canonical] = seed_model_from_dict(json.loads(text), source=f"built-in seed model {canonical}")
    return _CACHE[canonical]


def read_seed_model_file(path: "str | Path") -> SeedModel:
    """Read and validate a user seed model JSON file."""
    return seed_model_from_dict(read_json(path, "seed model file", SeedModelError), source=str(path))


def mCi_to_U(activity_mCi: Any, source: "str | SeedModel" = "6711") -> "float | np.ndarray":
    """Convert apparent activity (mCi) to air-kerma strength S_K (U).

    Uses the model's ``U_per_mCi`` (1.270 U/mCi for I-125, TG-43 1995
    exposure-rate constant times W/e; override with
    :meth:`SeedModel.with_U_per_mCi`).
    """
    model = load_seed_model(source)
    a = np.asarray(activity_mCi, dtype=float)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError(f"activity_mCi must be finite and >= 0, got {activity_mCi!r}")
    out = a * model.U_per_mCi
    return float(out) if out.ndim == 0 else out


def U_to_mCi(strength_U: Any, source: "str | SeedModel" = "6711") -> "float | np.ndarray":
    """Convert air-kerma strength S_K (U) to apparent activity (mCi)."""
    model = load_seed_model(source)
    s = np.asarray(strength_U, dtype=float)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InputError(f"strength_U must be finite and >= 0, got {strength_U!r}")
    out = s / model.U_per_mCi
    return float(out) if out.ndim == 0 else out
