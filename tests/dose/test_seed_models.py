"""The seed library: built-in datasets, provenance, user files and their validation."""

import copy
import json

import numpy as np
import pytest

import seedplan
from seedplan.errors import FileFormatError, SeedModelError
from seedplan.sources import available_seed_models, load_seed_model, read_seed_model_file, seed_model_from_dict


def test_builtin_models_and_flags():
    assert available_seed_models() == ["6711", "2301", "6733", "IAI-125A"]
    m = load_seed_model("6711")
    assert m.verified and m.dose_rate_constant_cGy_h_U == 0.965 and m.active_length_cm == 0.30
    assert m.capsule_diameter_mm == 0.8
    assert "Rivard" in m.citation and "transcriptions" in m.provenance
    assert load_seed_model("2301").verified
    for name in ("6733", "IAI-125A"):
        u = load_seed_model(name)
        assert not u.verified and "UNVERIFIED" in u.summary() and "UNVERIFIED" in u.provenance
    assert load_seed_model("oncoseed 6711") is m
    assert load_seed_model("iai125a").name == "IAI-125A"


def test_derived_tables_agree_with_published():
    # phi_an derived by solid-angle integration of the 2D data reproduces the published 6711 values
    m = load_seed_model("6711")
    derived = seedplan.sources.derive_phi_an(
        np.array(m.phi_r_cm), m.active_length_cm, np.array(m.F_r_cm), np.array(m.F_theta_deg), np.array(m.F)
    )
    np.testing.assert_allclose(derived, m.phi_an, atol=3e-3)
    # g_P derived from g_L with L = 0.40 cm reproduces the published Best 2301 g_P column
    b = load_seed_model("2301")
    d = b.to_dict()
    del d["radial_dose_function_point"]
    rebuilt = seed_model_from_dict(d)
    assert rebuilt.g_P_derived
    np.testing.assert_allclose(rebuilt.g_P, b.g_P, atol=6e-4)


def test_user_file_round_trip(tmp_path):
    m = load_seed_model("6711")
    path = tmp_path / "my_seed.json"
    d = m.to_dict()
    d["name"] = "my-6711"
    path.write_text(json.dumps(d))
    user = read_seed_model_file(path)
    assert user.name == "my-6711" and user.F == m.F and user.g_L == m.g_L
    pts = [[10.0, 5.0, 3.0]]
    assert seedplan.dose_rate(pts, [[0, 0, 0]], 1.0, source=user)[0] == seedplan.dose_rate(pts, [[0, 0, 0]], 1.0)[0]
    assert seedplan.load_seed_model(str(path)).name == "my-6711"


def _broken(mutate):
    d = copy.deepcopy(load_seed_model("6711").to_dict())
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("anisotropy_function"), "anisotropy_function"),
        (lambda d: d["radial_dose_function"].pop("g_L"), "g_L"),
        (lambda d: d["radial_dose_function"]["r_cm"].__setitem__(3, 0.1), "radial_dose_function.r_cm"),
        (lambda d: d["anisotropy_function"]["theta_deg"].__setitem__(2, 1.0), "theta_deg"),
        (lambda d: d["anisotropy_function"]["F"][0].__setitem__(0, -0.3), "anisotropy_function.F"),
        (lambda d: d["radial_dose_function"]["g_L"].__setitem__(5, 1.05), "g_L(1 cm)"),
        (lambda d: d["anisotropy_function"]["F"][2].__setitem__(-1, 0.97), "F(r, 90 deg)"),
        (lambda d: d.__setitem__("colour", "red"), "colour"),
        (lambda d: d["capsule"].__setitem__("mass_g", 1), "mass_g"),
        (lambda d: d.__setitem__("dose_rate_constant_cGy_h_U", -1), "dose_rate_constant_cGy_h_U"),
        (lambda d: d["anisotropy_function"].__setitem__("F", [[1.0]]), "anisotropy_function.F"),
        (lambda d: d.__setitem__("format", "other/2"), "format"),
        (lambda d: d.__setitem__("active_length_cm", 0.6), "active_length_cm"),
    ],
)
def test_malformed_models_rejected_naming_field(mutate, field, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(mutate)))
    with pytest.raises(SeedModelError) as info:
        read_seed_model_file(path)
    assert field in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileFormatError, match="missing.json"):
        read_seed_model_file(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(SeedModelError, match="not valid JSON"):
        read_seed_model_file(p)
