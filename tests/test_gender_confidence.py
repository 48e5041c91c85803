"""The gender confidence: its calibration, the "uncertain" threshold and what serving reads from a card (synthetic
data; no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agegender.serving.gender_confidence import (GenderConfidence, band_of, band_report, calibrated,
                                                 choose_threshold, confidence, fit_and_report, fit_calibration,
                                                 format_section, logit, sigmoid, write_to_card)


def overconfident(n: int, temperature: float, seed: int = 0, bias: float = 0.0):
    """Labels drawn from sigmoid(z + bias) and a model that says sigmoid((z + bias) * temperature) (too sure)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.5, n)
    female = rng.random(n) < sigmoid(z + bias)
    return sigmoid((z + bias) * temperature), female, z


def test_temperature_recovers_how_overconfident_the_model_is():
    p, female, _ = overconfident(20_000, temperature=3.0)
    a, b = fit_calibration(p, female, "temperature")
    assert b == 0.0 and a == pytest.approx(1 / 3, rel=0.05)
    # temperature scaling never changes the label, only the confidence
    assert np.array_equal(calibrated(p, a) >= 0.5, p >= 0.5)
    nll = lambda q: -np.mean(np.where(female, np.log(q), np.log1p(-q)))  # noqa: E731
    assert nll(calibrated(p, a)) < nll(np.clip(p, 1e-7, 1 - 1e-7))


def test_platt_also_fits_a_shift():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 20_000)
    female = rng.random(len(z)) < sigmoid(0.5 * z - 1.0)
    a, b = fit_calibration(sigmoid(z), female, "platt")
    assert a == pytest.approx(0.5, abs=0.04) and b == pytest.approx(-1.0, abs=0.06)
    with pytest.raises(ValueError):
        fit_calibration(sigmoid(z), female, "isotonic")
    with pytest.raises(ValueError):
        fit_calibration(np.array([]), np.array([]))


def test_fitting_survives_saturated_and_separable_probabilities():
    p = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # float32 outputs that reached 0 and 1
    female = p == 1.0
    a, _ = fit_calibration(p, female)
    assert np.isfinite(a) and a > 0
    assert np.all(np.isfinite(logit(p)))


def test_confidence_is_the_probability_of_the_stated_gender():
    assert confidence(np.array([0.9, 0.1, 0.5])).tolist() == pytest.approx([0.9, 0.9, 0.5])


def test_bands_follow_the_true_age_in_whole_years():
    assert band_of([0, 12, 13, 19, 20, 39, 40, 59, 60, 116]).tolist() == [
        "0-12", "0-12", "13-19", "13-19", "20-39", "20-39", "40-59", "40-59", "60+", "60+"]


def test_threshold_is_the_smallest_that_every_band_meets():
    # adults: always right. children: wrong at 0.55, 0.6 and 0.7, right above.
    conf = np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.6, 0.9, 0.99])
    correct = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    bands = np.array(["0-12"] * 7 + ["20-39"] * 3, object)
    assert choose_threshold(conf, correct, bands, 0.95) == 0.8
    # with a target of 75 %: at >= 0.7, 4 of 5 children are right; at >= 0.6, only 4 of 6
    assert choose_threshold(conf, correct, bands, 0.75) == 0.7
    # everyone right: no face needs to be uncertain
    assert choose_threshold(conf, np.ones(10, bool), bands) == 0.5


def test_threshold_counts_a_band_with_nobody_left_as_meeting_it_and_may_find_none():
    conf = np.array([0.6, 0.99, 0.7])
    bands = np.array(["0-12", "0-12", "60+"], object)
    # the only 60+ face is wrong: the threshold must pass it, and above 0.7 the 60+ band is empty
    assert choose_threshold(conf, np.array([1, 1, 0], bool), bands) == 0.99
    # the most confident child is wrong: every threshold keeps that child, so none meets the target
    assert choose_threshold(np.array([0.9, 0.6]), np.array([0, 1], bool), np.array(["0-12", "0-12"], object)) is None


def test_report_and_card_round_trip(tmp_path):
    val_p, val_female, z = overconfident(4000, temperature=2.5, seed=2)
    ages = np.where(np.abs(z) < 1.0, 5, 30)  # the hard faces are the children
    test_p, test_female, tz = overconfident(4000, temperature=2.5, seed=3)
    test_ages = np.where(np.abs(tz) < 1.0, 5, 30)
    section = fit_and_report(val_p, val_female, ages, test_p=test_p, test_female=test_female, test_ages=test_ages)
    assert section["method"] == "temperature" and section["temperature"] == pytest.approx(2.5, rel=0.1)
    assert section["fitted_on"] == "val" and "0-12" in section["band_rule"] and "95%" in section["band_rule"]
    by_band = {row["group"]: row for row in section["val"]["by_age_band"]}
    assert set(by_band) == {"0-12", "20-39", "all"}
    for row in by_band.values():  # the rule holds on val, in every band
        assert row["accuracy_labelled"] is None or row["accuracy_labelled"] >= 0.95
    assert by_band["0-12"]["uncertain_share"] > by_band["20-39"]["uncertain_share"]
    assert {row["group"] for row in section["test"]["by_age_band"]} == {"0-12", "20-39", "all"}
    assert "threshold" in format_section(section)

    model = tmp_path / "m.keras"
    model.write_bytes(b"zip")
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "input": {"image_size": 64}}))
    card = write_to_card(model, json.loads(json.dumps(section)))
    assert json.loads((tmp_path / "m.json").read_text())["gender_confidence"]["threshold"] == section["threshold"]
    assert card["name"] == "m"

    gender = GenderConfidence.from_card(card)
    assert gender.is_calibrated and gender.threshold == pytest.approx(section["threshold"])
    sure, unsure = gender.call(0.99999), gender.call(0.6)
    assert sure.gender == "female" and not sure.uncertain and sure.confidence < 0.99999
    assert unsure.uncertain and unsure.leans == "female" and unsure.confidence < section["threshold"]
    assert gender.call(0.2).leans == "male"


def test_without_a_card_section_serving_shows_the_model_probability_and_never_uncertain():
    for card in (None, {}, {"gender_confidence": None}, {"gender_confidence": {"threshold": 0.8}}):
        gender = GenderConfidence.from_card(card)
        assert not gender.is_calibrated and gender.threshold is None
        call = gender.call(0.51)
        assert call.gender == "female" and call.confidence == pytest.approx(0.51) and not call.calibrated
    nothing = GenderConfidence.from_card({"gender_confidence": {"a": 1.0, "threshold": None, "threshold_found": False}})
    assert nothing.call(0.999999).uncertain  # no threshold met the target: no face gets a gender


def test_band_report_without_a_threshold_labels_nobody():
    rows = band_report(np.array([0.9, 0.8]), np.array([1, 0], bool), np.array(["0-12", "60+"], object), None,
                       ["0-12", "13-19", "60+"])
    assert [r["group"] for r in rows] == ["0-12", "60+", "all"]
    assert all(r["uncertain_share"] == 1.0 and r["accuracy_labelled"] is None for r in rows)


def test_the_wilson_bound_asks_more_of_a_small_band():
    from agegender.serving.gender_confidence import wilson_lower

    assert wilson_lower(np.array([95]), np.array([100]), 0.0)[0] == pytest.approx(0.95)
    small, large = wilson_lower(np.array([19, 950]), np.array([20, 1000]), 1.645)
    assert small < 0.9 < 0.93 < large < 0.95  # the same 95 % share, far less sure on 20 faces
    # 20 faces, one wrong at the lowest confidence: the plain rule labels from 0.5, the bound from no threshold
    # that leaves fewer than ~60 right answers in a row
    conf = np.linspace(0.5, 0.99, 20)
    correct = np.ones(20, bool)
    correct[0] = False
    bands = np.array(["20-39"] * 20, object)
    assert choose_threshold(conf, correct, bands, 0.95) == 0.5
    assert choose_threshold(conf, correct, bands, 0.95, z=1.645) is None


def test_the_strictest_bound_that_val_allows_is_used():
    from agegender.serving.gender_confidence import strictest_threshold

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 400)
    correct = rng.uniform(size=400) < conf  # right about as often as the confidence says
    bands = np.array(["20-39"] * 400, object)
    threshold, z = strictest_threshold(conf, correct, bands, 0.95, ["20-39"])
    assert 0.0 <= z <= 1.645 and threshold is not None
    assert choose_threshold(conf, correct, bands, 0.95, ["20-39"], z=z) == threshold
    if z < 1.645:  # one step stricter finds none
        assert choose_threshold(conf, correct, bands, 0.95, ["20-39"], z=z + 0.05) is None
    assert threshold >= choose_threshold(conf, correct, bands, 0.95, ["20-39"])  # never laxer than the plain rule
