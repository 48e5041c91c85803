"""Plots: what their legends say (the notebooks draw the figures themselves)."""

import matplotlib

matplotlib.use("Agg")

from agegender.evaluation import plots  # noqa: E402

HISTORY = [{"epoch": e, "gender_out_accuracy": 0.8 + e / 100, "gender_out_loss": 0.5 - e / 100,
            "age_out_mae": 9.0 - e, "val_gender_out_accuracy": 0.8, "val_gender_out_loss": 0.4,
            "val_age_out_mae": 7.0} for e in (1, 2)]


def _legends(fig) -> list[list[str]]:
    return [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]


def test_training_curves_label_a_refits_val_curve_as_not_held_out():
    assert _legends(plots.training_curves(HISTORY)) == [["train", "validation"]] * 3
    refit = _legends(plots.training_curves(HISTORY, val_in_training=True))
    assert refit == [["train", "validation (in training: a refit)"]] * 3


def test_training_curves_without_val_show_train_only():
    history = [{k: v for k, v in row.items() if not k.startswith("val_")} for row in HISTORY]
    assert _legends(plots.training_curves(history)) == [["train"]] * 3


def test_card_training_curves_read_the_refit_flag_from_the_card():
    held_out = {"training": {"history": HISTORY}, "metrics": {"val": {"age_mae": 5.0}}}
    refit = {"training": {"history": HISTORY}, "metrics": {"val": {"age_mae": 3.0, "seen_in_training": True}}}
    assert _legends(plots.card_training_curves(held_out))[0] == ["train", "validation"]
    assert _legends(plots.card_training_curves(refit))[0] == ["train", "validation (in training: a refit)"]


def test_card_training_curves_of_an_ensemble_draw_each_member():
    card = {"members": [{"name": "lite0", "history": HISTORY}, {"name": "lite2", "history": HISTORY}],
            "training": {}, "metrics": {"val": {}}}
    assert _legends(plots.card_training_curves(card)) == [
        ["lite0: train", "lite0: validation", "lite2: train", "lite2: validation"]] * 3
