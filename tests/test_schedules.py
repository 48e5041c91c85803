"""The learning-rate schedule that a time budget can shorten: Keras's cosine until shortened, then continuous."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from agegender.training.loop import _budgeted_schedule  # noqa: E402
from agegender.training.schedules import BudgetedCosineDecay  # noqa: E402

WARMUP = dict(initial_learning_rate=1e-5, decay_steps=1000, alpha=0.01, warmup_target=1e-3, warmup_steps=50)
NO_WARMUP = dict(initial_learning_rate=1e-3, decay_steps=1050, alpha=0.01)


def _rates(schedule, steps) -> np.ndarray:
    return np.array([float(schedule(step)) for step in steps])


@pytest.mark.slow
@pytest.mark.parametrize("settings", [WARMUP, NO_WARMUP], ids=["warm-up", "no warm-up"])
def test_unshortened_schedule_is_keras_cosine_bit_for_bit(settings):
    """A run that fits its budget must train exactly as before the budgeted schedule existed."""
    steps = range(0, 1200, 7)
    np.testing.assert_array_equal(_rates(BudgetedCosineDecay(**settings), steps),
                                  _rates(keras.optimizers.schedules.CosineDecay(**settings), steps))
    assert BudgetedCosineDecay(**settings).end_step == 1050


@pytest.mark.slow
def test_shortened_schedule_goes_on_from_the_current_rate_and_ends_at_the_new_end():
    schedule, original = BudgetedCosineDecay(**WARMUP), BudgetedCosineDecay(**WARMUP)
    schedule.finish_by(500, 800)
    assert schedule.end_step == 800
    np.testing.assert_array_equal(_rates(schedule, range(0, 501)), _rates(original, range(0, 501)))  # the past
    before, at, after = _rates(schedule, [499, 500, 501])
    pace = (1050 - 500) / (800 - 500)  # the rest of the original decay in the steps left
    assert before > at > after and (at - after) / (before - at) == pytest.approx(pace, rel=0.02)  # no jump
    floor = WARMUP["alpha"] * WARMUP["warmup_target"]
    assert _rates(schedule, [800, 900]) == pytest.approx([floor, floor])
    assert float(schedule(799)) > floor and float(original(800)) > 10 * floor
    rates = _rates(schedule, range(500, 801))
    assert np.all(np.diff(rates) <= 0)  # still decaying monotonically
    # what is left of the decay is traversed at one pace: the midpoint of the remaining steps sits halfway
    # through the remaining virtual steps of the original schedule
    assert float(schedule.virtual_step(650)) == pytest.approx((500 + 1050) / 2)


def test_shortening_twice_and_after_the_end():
    schedule = BudgetedCosineDecay(**WARMUP)
    schedule.finish_by(300, 900)
    rate_at_600 = float(schedule(600))
    schedule.finish_by(600, 700)
    assert schedule.end_step == 700
    assert float(schedule(600)) == pytest.approx(rate_at_600, rel=1e-5)
    assert float(schedule(700)) == pytest.approx(WARMUP["alpha"] * WARMUP["warmup_target"])
    schedule.finish_by(750, 760)  # the decay is over: nothing to shorten
    assert schedule.end_step == 700
    with pytest.raises(ValueError, match="must come after the current step"):
        schedule.finish_by(600, 600)


def test_shortened_schedule_survives_serialisation():
    """A checkpoint written after the shortening resumes with the shortened schedule."""
    schedule = BudgetedCosineDecay(**WARMUP)
    schedule.finish_by(400, 640)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, BudgetedCosineDecay) and restored.end_step == 640
    np.testing.assert_array_equal(_rates(restored, range(400, 700, 3)), _rates(schedule, range(400, 700, 3)))


def test_compiled_training_step_sees_the_shortening():
    """The rate is read inside the traced training step: shortening between epochs must reach it."""
    schedule = BudgetedCosineDecay(initial_learning_rate=0.1, decay_steps=100, alpha=0.0)
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mae")
    x, y = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # traced; one step at rate 0.1
    assert _budgeted_schedule(model.optimizer) is schedule
    schedule.finish_by(1, 2)  # step 1 goes on at the current rate, step 2 is the end
    kernel = float(model.layers[-1].kernel.numpy()[0, 0])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # step 1: SGD on the MAE moves the kernel by the rate
    assert kernel - float(model.layers[-1].kernel.numpy()[0, 0]) == pytest.approx(float(schedule(1)), rel=1e-4)
    assert float(schedule(1)) == pytest.approx(0.1, rel=1e-3)
    kernel = float(model.layers[-1].kernel.numpy()[0, 0])
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # step 2: at the floor (0); unshortened it would be ~0.1
    assert float(model.layers[-1].kernel.numpy()[0, 0]) == kernel


def test_optimizers_without_the_schedule_are_left_alone():
    assert _budgeted_schedule(keras.optimizers.Adam(learning_rate=1e-3)) is None
    assert _budgeted_schedule(keras.optimizers.Adam(
        learning_rate=keras.optimizers.schedules.CosineDecay(1e-3, 100))) is None
    assert _budgeted_schedule(None) is None
