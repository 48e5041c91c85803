"""The benchmark scripts' own arithmetic (their figures come from real runs; these check how they are computed)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ensemble_probe  # noqa: E402


def test_ensemble_summary_reports_overall_band_and_gender_figures():
    age = np.array([5.0, 15.0, 30.0, 50.0, 70.0, 80.0])
    pred = np.array([6.0, 15.0, 27.0, 50.0, 60.0, 84.0])  # errors 1, 0, 3, 0, 10, 4
    gender = np.array([0, 1, 0, 1, 0, 1])
    p_female = np.array([0.2, 0.9, 0.6, 0.4, 0.1, 0.7])  # two of six wrong
    line = ensemble_probe.summary(age, gender, pred, p_female)
    assert line == "MAE 3.00  bands 1.00 / 0.00 / 3.00 / 0.00 / 7.00  gender 66.67 %"


def test_ensemble_probe_needs_two_models(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ensemble_probe.py", "models/agenet.keras"])
    with pytest.raises(SystemExit):
        ensemble_probe.main()
    assert "at least two models" in capsys.readouterr().err
