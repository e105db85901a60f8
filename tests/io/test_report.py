"""The self-contained HTML plan report and the DVH plot."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from seedplan.io.plan_table import plan_table_rows
from seedplan.io.report import report_html, write_plan_report, write_report


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    from seedplan.imaging.phantom import make_spine_phantom
    from seedplan.planning import plan_case

    ph = make_spine_phantom(spacing_mm=2.0)
    res = plan_case(ph.ct, ph.structures, case_reference={"name": "phantom <L3> & co"})
    out = tmp_path_factory.mktemp("report")
    paths = write_plan_report(res, ph.ct, ph.structures, out)
    return ph, res, out, paths


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("meta", "img", "br", "link", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


def test_write_plan_report_files(planned):
    _, _, out, paths = planned
    assert set(paths) == {"axial", "sagittal", "coronal", "dvh", "report"}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 5000
    assert paths["report"].name == "report.html"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_dvh_png_has_curves(planned):
    import matplotlib.image as mpimg

    img = mpimg.imread(planned[3]["dvh"])[..., :3]
    assert img.shape[0] > 300
    colours = np.unique((img * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 30
    # the target curve (green, darkened for white paper) is drawn
    g = (img[..., 1] > 0.6) & (img[..., 0] < 0.2) & (img[..., 2] < 0.2)
    assert g.sum() > 200


def test_report_is_self_contained(planned):
    text = planned[3]["report"].read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()
    without_data = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in without_data.lower() and "href=" not in without_data
    assert "<link" not in text.lower() and "@import" not in text and "url(" not in text
    tags = _parse(text)
    assert not tags.errors, tags.errors[:3]
    imgs = [a["src"] for t, a in tags.tags if t == "img"]
    assert len(imgs) == 4
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert text.count("data:image/png;base64,") == 4
    assert "@media print" in text


def test_report_content(planned):
    _, res, _, paths = planned
    plan = res.plan
    text = paths["report"].read_text(encoding="utf-8")
    assert "phantom &lt;L3&gt; &amp; co" in text and "<L3>" not in text  # escaped case name
    assert "seedplan 0.1.0" in text or "seedplan " in text
    assert "TG-43U1 2D, dose to water in water" in text and "T½/ln 2" in text
    assert f"<strong>{plan.seed_model.name}</strong>" in text and "Rivard" in text
    assert 'class="alert unverified"' not in text  # 6711 is verified
    assert "research use" in text.lower() and "physicist" in text
    # one table row per seed, with its position and activity
    rows = plan_table_rows(plan)
    assert text.count('<tr class="seed-row') == plan.n_seeds == len(rows)
    for r in rows:
        assert f'{r["seed_x_mm"]:.1f}, {r["seed_y_mm"]:.1f}, {r["seed_z_mm"]:.1f}' in text
    for n, needle in enumerate(plan.needles, start=1):
        assert f"<strong>N{n}</strong>" in text
        assert f'{needle.entry[0]:.1f}, {needle.entry[1]:.1f}, {needle.entry[2]:.1f}' in text
    assert f"{plan.total_activity_mCi:.2f} mCi" in text
    if plan.pvp_needles:
        assert text.count('<tr class="pvp-row">') == len(plan.pvp_needles)
    # OAR table with the organs and their D0.1cc
    for name, m in plan.results["oars"].items():
        assert f'<tr class="oar-row"><td>{name}</td>' in text
        assert f'{m["D0.1cc_Gy"]:.1f}' in text
    assert "EQD2" in text


def test_badges_follow_goals(planned):
    plan = planned[1].plan
    goals = plan.results["goals"]
    text = planned[3]["report"].read_text(encoding="utf-8")
    n_pass = sum(bool(g["passed"]) for g in goals)
    assert text.count('class="badge pass"') == n_pass
    assert text.count('class="badge fail"') == len(goals) - n_pass
    # flip the first goal: its badge and the "not met" alert follow
    flipped = [dict(g) for g in goals]
    flipped[0]["passed"] = not flipped[0]["passed"]
    results = dict(plan.results)
    results["goals"] = flipped
    results["failed_goals"] = [g["goal"] for g in flipped if not g["passed"]]
    text2 = report_html(plan.with_results(results))
    rows = re.findall(r'<tr class="goal-row"><td><span class="badge (pass|fail)">(PASS|FAIL)</span></td><td>(.*?)</td>', text2)
    assert [(b, w) for b, w, _ in rows] == [("pass", "PASS") if g["passed"] else ("fail", "FAIL") for g in flipped]
    assert len(rows) == len(goals)
    if results["failed_goals"]:
        assert "Goals not met" in text2


def test_unverified_seed_model_warning(planned, tmp_path):
    plan = planned[1].plan
    bad = dataclasses.replace(plan, seed_model="6733")  # the status comes with the model's dataset
    out = write_report(bad, tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert 'class="alert unverified"' in text
    assert "UNVERIFIED seed model: 6733" in text
    assert "<strong>6733</strong> (UNVERIFIED)" in text
    # the plan carries the dataset: an unverified user model is flagged too
    from seedplan.sources import load_seed_model

    mine = dataclasses.replace(load_seed_model("6711"), name="MySeed", verified=False)
    text2 = report_html(dataclasses.replace(plan, seed_model=mine))
    assert 'class="alert unverified"' in text2 and "UNVERIFIED seed model: MySeed" in text2


def test_write_report_accepts_result_and_extra_images(planned, tmp_path):
    _, res, _, paths = planned
    images = {"dvh": paths["dvh"], "axial": paths["axial"], "3d_overview": paths["coronal"]}
    out = write_report(res, tmp_path / "sub" / "r.html", images=images, title="Review & <check>")
    text = out.read_text(encoding="utf-8")
    assert "<h2>3D views</h2>" in text and "3d overview" in text
    assert text.count("data:image/png;base64,") == 3
    assert "Review &amp; &lt;check&gt;" in text
    assert "Slice views" in text and "sagittal slice" not in text.lower()


def test_write_report_without_images_or_results(planned, tmp_path):
    plan = planned[1].plan
    bare = dataclasses.replace(plan, results={})
    text = write_report(bare, tmp_path / "bare.html").read_text(encoding="utf-8")
    assert "data:image" not in text and "No goals were evaluated" in text
    assert text.count('<tr class="seed-row') == plan.n_seeds


def test_bad_inputs(planned, tmp_path):
    from seedplan.errors import InputError

    with pytest.raises(InputError):
        write_report(object(), tmp_path / "x.html")
    with pytest.raises(InputError):
        write_report(planned[1].plan, tmp_path / "x.html", images={"dvh": tmp_path / "missing.png"})
    assert not (tmp_path / "x.html").exists()
