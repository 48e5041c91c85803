"""Batch normalization that trains with TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalization from separate
element-wise ops (mean, squared difference, multiply, ..., and as many again in the backward pass).
On a CPU each of those ops is a full pass over a large activation tensor, and in EfficientNet-Lite at
128 px they took more of a training step than all the convolutions together
(``research/results/finetune_throughput.md``, "Fused batch normalization"). TensorFlow's
``FusedBatchNormV3`` (oneDNN's kernel on x86) does the same work in one pass forward and one backward,
which makes an AgeNet training step about twice as fast.

The layer is ``keras.layers.BatchNormalization`` in every other respect: the same weights (so weight
files saved with either class load into the other), the same inference path (so exports and serving
are unchanged), the same moving-statistics update. The class keeps the name ``BatchNormalization``
because Keras names a layer's entry in a ``.weights.h5`` file after its class; a different name would
orphan every converted or saved weight file.
"""

from __future__ import annotations

import keras

__all__ = ["BatchNormalization"]


@keras.saving.register_keras_serializable(package="agegender")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step on 4-D channels-last input is fused.

    Falls back to the Keras computation wherever the fused kernel does not apply: other backends,
    inference, masks, other ranks or axes, renorm, synchronized statistics, no scale or no centre.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (
            bool(training) and self.trainable and mask is None
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4 and self.axis in (-1, 3)
            and self.scale and self.center and not self.renorm and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)  # as Keras does: statistics in float32 whatever the policy
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=True,
        )
        # The kernel normalizes with the biased batch variance but returns the unbiased one (n / (n - 1));
        # Keras keeps the biased variance in its moving average, so undo the correction.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)
