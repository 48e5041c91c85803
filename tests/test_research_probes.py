"""The research probes' own arithmetic (research/probes/; their figures come from real runs, these check how they
are computed)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "research" / "probes"))
sys.path.append(str(REPO / "benchmarks"))  # the helpers the probes share with the benchmarks (_splits, _timing, ...)

import age_readout  # noqa: E402
import detail_cap  # noqa: E402
import ensemble_probe  # noqa: E402
import face_descriptor_probe  # noqa: E402
import gender_disagreements  # noqa: E402
import recipe_ablation  # noqa: E402
import train_step_profile  # noqa: E402
import weight_sharing_probe  # noqa: E402

from agegender.evaluation.reference import GOAL_BANDS  # noqa: E402


def test_ensemble_summary_reports_overall_band_and_gender_figures():
    age = np.array([5.0, 15.0, 30.0, 50.0, 70.0, 80.0])
    pred = np.array([6.0, 15.0, 27.0, 50.0, 60.0, 84.0])  # errors 1, 0, 3, 0, 10, 4
    gender = np.array([0, 1, 0, 1, 0, 1])
    p_female = np.array([0.2, 0.9, 0.6, 0.4, 0.1, 0.7])  # two of six wrong
    line = ensemble_probe.summary(age, gender, pred, p_female)
    assert line == "MAE 3.00  bands 1.00 / 0.00 / 3.00 / 0.00 / 7.00  gender 66.67 %"


def test_disagreements_are_the_faces_the_models_contradict_most_confident_first():
    p_female = np.array([0.9, 0.2, 0.6, 0.05, 0.45, 0.5, 0.5])
    labels = np.array([0, 0, 0, 1, 1, 1, 0])  # 1 = female
    wrong, p_other = gender_disagreements.disagreements(p_female, labels)
    np.testing.assert_allclose(p_other, [0.9, 0.2, 0.6, 0.95, 0.55, 0.5, 0.5])
    assert wrong.tolist() == [3, 0, 2, 4, 6]  # 0.5 reads as female, as in the evaluation


def test_ensemble_probe_needs_two_models(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ensemble_probe.py", "models/agenet.keras"])
    with pytest.raises(SystemExit):
        ensemble_probe.main()
    assert "at least two models" in capsys.readouterr().err


def test_weight_average_is_the_mean_of_every_weight_and_refuses_other_architectures(tmp_path):
    import keras

    from agegender.models import build_model
    from agegender.serving.modelio import load_model, save_model_atomic

    paths = []
    for seed, widths in ((1, [8]), (2, [8]), (3, [16])):
        keras.utils.set_random_seed(seed)
        paths.append(str(save_model_atomic(build_model("small_resnet", 32, 3, widths=widths),
                                           tmp_path / f"m{seed}.keras", {"name": f"m{seed}"})))
    soup, card = ensemble_probe.weight_average(paths[:2])
    first, second = (load_model(path)[0].get_weights() for path in paths[:2])
    assert card["name"] == "m1"
    assert any(not np.allclose(a, b) for a, b in zip(first, second))
    for got, a, b in zip(soup.get_weights(), first, second):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6)
    with pytest.raises(SystemExit, match="do not match"):
        ensemble_probe.weight_average([paths[0], paths[2]])


def test_weight_codes_fit_their_bits_and_stay_within_half_a_step_of_each_channel():
    rng = np.random.default_rng(0)
    kernel = (rng.normal(size=(3, 3, 16, 8)) * np.geomspace(1e-3, 1, 8)).astype(np.float32)  # channel scales 1000x apart
    for bits in (8, 6, 4):
        codes, weights = weight_sharing_probe.linear_codes(kernel, bits)
        assert codes.min() >= 0 and codes.max() < 2 ** bits
        step = np.abs(kernel).max(axis=(0, 1, 2)) / (2 ** (bits - 1) - 1)
        assert np.all(np.abs(weights - kernel) <= step / 2 + 1e-7)  # per channel: small channels keep their resolution
    codes, weights = weight_sharing_probe.kmeans_codes(kernel, 4)
    assert codes.min() >= 0 and codes.max() < 16
    for channel in range(8):  # 16 shared values, scaled per channel
        assert len(np.unique(weights[..., channel])) <= 16
    errors = [np.abs(weight_sharing_probe.kmeans_codes(kernel, bits)[1] - kernel).mean() for bits in (2, 4, 6)]
    assert errors[0] > errors[1] > errors[2]


def test_weight_sharing_quantizes_only_the_part_asked_and_stores_fewer_bits_in_fewer_bytes():
    import keras

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(32, 3, name="block1_conv")(inputs)
    features = keras.layers.Conv2D(32, 3, name="conv64_1_conv1")(features)
    outputs = keras.layers.Dense(64, name="hidden")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    originals = [variable.numpy() for variable in model.weights]
    assert [weight_sharing_probe.part_of(v.path) for v in model.weights][::2] == ["backbone", "descriptor", "heads"]
    sizes = {}
    for variant in ("float16", "int8", "int5", "only descriptor int5"):
        sizes[variant] = weight_sharing_probe.quantize(model, originals, variant, min_size=800)
        changed = [not np.array_equal(v.numpy(), o.astype(np.float16).astype(np.float32))
                   for v, o in zip(model.weights, originals)]
        kernels_changed = [changed[i] for i in (0, 2, 4)]  # biases stay float16 in every variant
        assert not any(changed[i] for i in (1, 3, 5))
        assert kernels_changed == {"float16": [False] * 3, "int8": [True, True, True], "int5": [True, True, True],
                                   "only descriptor int5": [False, True, False]}[variant]
    assert sizes["float16"] == 2 * sum(o.size for o in originals) / 2 ** 20
    assert sizes["int5"] < sizes["int8"] < sizes["float16"]
    assert sizes["int5"] < sizes["only descriptor int5"] < sizes["float16"]


def _card(name: str, age_mae: float, **config) -> dict:
    metrics = {"age_mae": age_mae, "gender_accuracy": 0.95,
               "by_age_band": [{"group": band, "age_mae": age_mae} for band in GOAL_BANDS],
               "by_gender": [{"gender_accuracy": 0.95}, {"gender_accuracy": 0.94}]}
    return {"name": name, "config": {"model": "agenet", **config},
            "training": {"epochs_completed": 12, "seconds_per_epoch": 300.0, "wall_seconds": 3600.0},
            "metrics": {"val": dict(metrics), "test": dict(metrics)}}

def _write_cards(tmp_path, *cards) -> list[str]:
    paths = []
    for card in cards:
        path = tmp_path / f"{card['name']}.json"
        path.write_text(json.dumps(card))
        paths.append(str(path))
    return paths



def test_recipe_table_shows_what_differs_and_flags_a_refits_in_sample_val(tmp_path, capsys):
    plain, refit = _card("plain", 4.5), _card("refit", 4.4, train_on_val=True)
    refit["metrics"]["val"]["seen_in_training"] = True
    paths = _write_cards(tmp_path, plain, refit)
    recipe_ablation.main(paths)
    out = capsys.readouterr().out
    assert "| recipe | train_on_val | read-out |" in out
    assert "| plain | val | 4.50 | 95.00 |" in out
    assert "| refit | val (fitted on) | 4.40 |" in out
    assert "| refit | test | 4.40 |" in out


def test_age_prior_has_no_empty_year_and_sums_to_one():
    prior = age_readout.age_prior(np.array([30] * 90 + [80] * 10), bins=117)
    assert prior.sum() == pytest.approx(1.0)
    assert (prior > 0).all() and prior.argmax() == 30
    assert prior[80] == pytest.approx(prior[30] / 9, rel=1e-6)


def test_prior_adjustment_moves_the_median_away_from_the_crowded_ages():
    prior = age_readout.age_prior(np.array([30] * 95 + [70] * 5), bins=117)
    dist = np.exp(-0.5 * ((np.arange(117) - 60) / 8.0) ** 2)[None, :]
    dist /= dist.sum()
    plain = age_readout.readouts(dist)["median"][0]
    adjusted = age_readout.prior_adjusted(dist, prior, 0.3)
    assert adjusted.sum() == pytest.approx(1.0)
    assert plain == pytest.approx(60.0, abs=0.1)
    assert age_readout.readouts(adjusted)["median"][0] > plain + 1  # towards the rare old ages
    np.testing.assert_allclose(age_readout.prior_adjusted(dist, prior, 0.0), dist)


def test_spread_mae_removes_the_bias_and_never_exceeds_the_mae():
    error = np.array([-10.0, -6.0, -4.0, -2.0, 2.0])  # median -4: |-6|, |-2|, 0, |2|, |6| -> mean 3.2
    assert age_readout.spread_mae(error) == pytest.approx(3.2)
    assert age_readout.spread_mae(error) <= np.abs(error).mean()
    assert age_readout.spread_mae(error + 100) == pytest.approx(3.2)  # a constant bias is all it removes

def test_ridge_recovers_a_linear_map_and_leaves_the_bias_unpenalised():
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(500, 3)), np.ones(500)]
    y = x @ np.array([1.0, -2.0, 0.5, 40.0])
    assert face_descriptor_probe.fit_ridge(x, y, l2=1e-6) == pytest.approx([1.0, -2.0, 0.5, 40.0], abs=1e-4)
    shrunk = face_descriptor_probe.fit_ridge(x, y, l2=1e4)
    assert np.all(np.abs(shrunk[:3]) < 0.2) and shrunk[3] == pytest.approx(40.0, abs=0.5)  # weights shrink, bias not


def test_op_milliseconds_sums_op_events_by_type():
    xplane_pb2 = pytest.importorskip("tensorflow.tsl.profiler.protobuf.xplane_pb2")
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    for key, name in ((1, "model/conv/Conv2D:_MklNativeConv2D"), (2, "model/bn/Mul:Mul"), (3, "Run"),
                      (4, "ExecutorState::Process"), (5, "EagerLocalExecute: __inference_step_1")):
        plane.event_metadata[key].name = name
    for line_name, events in (("tf_Compute/1", [(1, 3e9), (2, 1e9), (4, 9e9)]), ("tf_Compute/2", [(1, 2e9), (3, 9e9)]),
                              ("python", [(5, 9e9)])):
        line = plane.lines.add(name=line_name)
        for key, picoseconds in events:
            line.events.add(metadata_id=key, duration_ps=int(picoseconds))
    totals = train_step_profile.op_milliseconds(space.SerializeToString())
    assert totals == {"_MklNativeConv2D": 5.0, "Mul": 1.0}  # ms, over both threads; the executor's events are not ops


def test_recipe_table_against_a_baseline_gives_differences_and_misses_of_the_goal(tmp_path, capsys):
    base, better = _card("base", 4.5), _card("better", 4.3)
    better["metrics"]["test"] = {**better["metrics"]["test"], "gender_accuracy": 0.951}
    better["metrics"]["val"] = {**better["metrics"]["val"], "gender_accuracy": 0.949}  # 95.0 % is the goal
    paths = _write_cards(tmp_path, base, better)
    recipe_ablation.main(paths, baseline=paths[0])
    out = capsys.readouterr().out
    assert "| base | val | +0.00 | +0.00 | +0.00 |" in out
    # 4.3 years in every band: above face-api.js's 1.79 and 4.16 for children and teenagers only
    assert "| better | test | -0.20 | +0.10 | -0.20 | 0-12, 13-19 |" in out
    assert "| better | val | -0.20 | -0.10 | -0.20 | gender, 0-12, 13-19 |" in out


def test_recipe_changes_name_the_settings_that_differ_inside_model_kwargs_too():
    base = {"image_size": 128, "max_train_minutes": 88, "model_kwargs": {"dropout": 0.3, "trainable_from": None},
            "age_readout": "val", "progressive_resizing": []}
    run = {"image_size": 160, "max_train_minutes": 40, "model_kwargs": {"dropout": 0.3, "trainable_from": "block3"},
           "age_readout": "median", "progressive_resizing": [[96, 5]]}
    # the budget bounds a run, it is not part of its recipe
    assert recipe_ablation.recipe_changes(run, base) == (
        "age_readout=median, image_size=160, progressive_resizing=[[96, 5]], trainable_from=block3")
    assert recipe_ablation.recipe_changes(base, base) == ""


def test_summary_gives_one_row_per_run_and_hides_a_refits_in_sample_val(tmp_path):
    base, bigger, refit = _card("base", 4.5), _card("bigger", 4.3, image_size=160), _card("refit", 4.4, train_on_val=True)
    refit["metrics"]["val"]["seen_in_training"] = True
    paths = _write_cards(tmp_path, base, bigger, refit)
    rows = recipe_ablation.summary(paths, baseline=paths[0]).splitlines()
    assert rows[0].startswith("| run | recipe changed from base | train min |")
    assert rows[2] == "| base | (baseline) | 60.0 | 4.50 | 95.00 | 4.50 | 4.50 | 95.00 | 4.50 | 0-12, 13-19 |"
    assert rows[3].startswith("| bigger | image_size=160 | 60.0 | 4.30 | 95.00 | 4.30 | 4.30 |")
    assert rows[4].startswith("| refit | train_on_val=true | 60.0 | fitted on | fitted on | fitted on | 4.40 |")


def test_an_ensembles_card_shows_what_each_member_changed_and_its_figures_but_no_recipe_row(tmp_path):
    base, member = _card("base", 4.5), _card("member", 4.6, image_size=160)
    pair = {key: value for key, value in _card("pair", 4.2).items() if key != "config"}
    pair["members"] = [{"name": "base_copy", "config": base["config"]}, {"name": "member", "config": member["config"]}]
    paths = _write_cards(tmp_path, base, pair)
    rows = recipe_ablation.summary(paths, baseline=paths[0]).splitlines()
    assert rows[3].startswith("| pair | mean of base_copy (same recipe) + member (image_size=160) | 60.0 | 4.20 |")
    table = recipe_ablation.tables(paths, baseline=paths[0])
    assert "| pair | val | 4.20 |" in table and "| pair | test | -0.30 |" in table
    settings = table.split("\n\n")[0]
    assert "| base |" in settings and "| pair |" not in settings


def test_a_mixed_models_card_names_the_model_it_starts_from_and_the_descriptors_weight(tmp_path):
    base = _card("base", 4.5)
    mixed = {**_card("mixed", 4.5), "base_model": {"name": "base"}, "face_descriptor": {"agenet_logit_weight": 0.7}}
    heads = {**_card("heads", 4.1), "base_model": {"name": "base"},
             "face_descriptor": {"agenet_logit_weight": 0.8, "gender_heads": {"features": "inner"},
                                 "age_head": {"agenet_dist_weight": 0.4}}}
    paths = _write_cards(tmp_path, base, mixed, heads)
    rows = recipe_ablation.summary(paths, baseline=paths[0]).splitlines()
    assert rows[3].startswith("| mixed | base's model + dlib's face network: gender from its descriptor (weight of "
                              "base's logit 0.7) |")
    assert rows[4].startswith("| heads | base's model + dlib's face network: gender from MLP heads on its inner "
                              "features (weight of base's logit 0.8), age heads on its inner features (weight of "
                              "base's distribution 0.4) |")


def test_update_rewrites_only_the_marked_table_and_reports_no_change_the_second_time(tmp_path):
    paths = _write_cards(tmp_path, _card("base", 4.5), _card("other", 4.2))
    page = tmp_path / "page.md"
    before, after = "# Runs\n\nprose stays\n\n", "\nmore prose\n"
    page.write_text(before + f"<!-- recipe_ablation.py --summary --baseline {paths[0]} {' '.join(paths)} -->\n"
                    "| a stale table |\n<!-- /recipe_ablation.py -->\n" + after)
    assert recipe_ablation.update(page) is True
    text = page.read_text()
    assert text.startswith(before) and text.endswith(after)
    assert "| a stale table |" not in text and "| other | (baseline)" not in text
    assert "| other | same recipe, retrained | 60.0 | 4.20 |" in text
    assert recipe_ablation.update(page) is False
    with pytest.raises(SystemExit, match="no <!-- recipe_ablation.py"):
        recipe_ablation.update(tmp_path / "base.json")


def test_summary_without_a_baseline_is_refused():
    with pytest.raises(SystemExit, match="--summary needs --baseline"):
        recipe_ablation.render(recipe_ablation._parser().parse_args(["--summary", "models/agenet.json"]))


@pytest.mark.parametrize("page", ["research/run_log.md", "research/results/recipes.md"])
def test_committed_recipe_tables_are_what_their_cards_give(page):
    """The tables of whole runs are generated; edit the cards list in the comment and run --update, not the table."""
    text = (recipe_ablation.REPO / page).read_text()
    assert recipe_ablation.BLOCK.search(text), f"{page} lost its generated table"
    assert recipe_ablation.regenerated(text) == text, (
        f"{page}: stale table; run `python research/probes/recipe_ablation.py --update {page}`")


def test_detail_cap_probe_keeps_grayscale_and_colour_shapes_and_only_removes_detail():
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        images = rng.integers(0, 256, size=(2, 128, 128, channels), dtype=np.uint8)
        out = detail_cap.capped(images, 64)
        assert out.shape == images.shape  # OpenCV drops a grayscale channel axis; the probe must not
        assert abs(float(out.mean()) - float(images.mean())) < 1.0  # the same picture ...
        assert out.std() < 0.7 * images.std()  # ... with less of its pixel-level noise
    assert detail_cap.capped(images, None) is images


def test_domain_gap_figure_is_drawn_from_the_points(tmp_path):
    points = [{"model": "a", "cap": None, "val_bias": -0.1, "fgnet_bias": 4.2},
              {"model": "a", "cap": 80, "val_bias": -0.6, "fgnet_bias": 3.8},
              {"model": "b", "cap": 80, "val_bias": -0.5, "fgnet_bias": 3.9}]
    detail_cap.plot_gap(points, str(tmp_path / "gap.png"))
    assert (tmp_path / "gap.png").stat().st_size > 10_000
