"""A cosine learning-rate schedule that can finish early when a run's time budget turns out too short.

A run that the wall-clock budget stops before its last epoch keeps the weights of a rate that had not decayed
yet (on this project's host an epoch takes 320 s in a fast phase and up to 700 s in a slow one, so the same
twelve-epoch recipe fits 88 minutes in one and stops after nine or ten epochs in the other). Instead, once the
epochs done so far forecast an overrun, :meth:`BudgetedCosineDecay.finish_by` squeezes the rest of the decay
into the epochs that still fit: the rate goes on from its current value, without a jump, and reaches its floor
at the end of the last epoch that fits.

Until that happens the schedule is Keras's ``CosineDecay`` exactly (the same values, bit for bit), so a run
that fits its budget is unchanged and reproducible.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["BudgetedCosineDecay"]


@keras.saving.register_keras_serializable(package="agegender")
class BudgetedCosineDecay(keras.optimizers.schedules.CosineDecay):
    """``CosineDecay`` (with optional warm-up) read at a *virtual* step that can be made to run faster.

    The virtual step is ``anchor_virtual_step + (step - anchor_step) * pace``: the optimizer's own step
    (``anchor 0, 0, pace 1``) until :meth:`finish_by` moves the anchor to the current step and raises the pace
    so that the virtual step reaches the end of the original schedule at the new last step. The three numbers
    live in a variable, so a compiled training step sees the change, and in ``get_config``, so a checkpoint
    resumed later goes on with the shortened schedule.
    """

    def __init__(self, *args: Any, anchor_step: float = 0.0, anchor_virtual_step: float = 0.0, pace: float = 1.0,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._anchor = keras.Variable([anchor_step, anchor_virtual_step, pace], dtype="float32", trainable=False,
                                      name="budgeted_cosine_anchor")

    def _anchor_values(self) -> tuple[float, float, float]:
        """``anchor_step, anchor_virtual_step, pace`` as Python floats."""
        anchor_step, anchor_virtual, pace = (float(v) for v in ops.convert_to_numpy(self._anchor))
        return anchor_step, anchor_virtual, pace

    @property
    def end_step(self) -> int:
        """The optimizer step at which the rate reaches its floor (``alpha`` times the peak)."""
        anchor_step, anchor_virtual, pace = self._anchor_values()
        return int(round(anchor_step + (self._original_end - anchor_virtual) / pace))

    @property
    def _original_end(self) -> float:
        return float(self.decay_steps + (self.warmup_steps if self.warmup_target is not None else 0))

    def virtual_step(self, step: Any) -> Any:
        """Where ``step`` falls on the original (unshortened) schedule.

        Steps before the anchor (which training never revisits) map linearly onto the virtual steps before it:
        exactly the original schedule after one shortening, a smooth stand-in for the earlier pieces after two.
        """
        anchor = ops.convert_to_tensor(self._anchor)
        step = ops.cast(step, "float32")
        before = step * anchor[1] / ops.maximum(anchor[0], 1.0)
        return ops.where(step < anchor[0], before, anchor[1] + (step - anchor[0]) * anchor[2])

    def __call__(self, step: Any) -> Any:
        return super().__call__(self.virtual_step(step))

    def finish_by(self, current_step: int, end_step: int) -> None:
        """From ``current_step`` on, go through the rest of the schedule so that it ends at ``end_step``."""
        if not 0 <= current_step < end_step:
            raise ValueError(f"the new end ({end_step}) must come after the current step ({current_step})")
        virtual_now = float(ops.convert_to_numpy(self.virtual_step(current_step)))
        remaining = self._original_end - virtual_now
        if remaining <= 0:
            return  # the decay is over already
        self._anchor.assign([float(current_step), virtual_now, remaining / (end_step - current_step)])

    def get_config(self) -> dict[str, Any]:
        anchor_step, anchor_virtual, pace = self._anchor_values()
        return {**super().get_config(), "anchor_step": anchor_step, "anchor_virtual_step": anchor_virtual,
                "pace": pace}
