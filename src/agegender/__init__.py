"""agegender: age and gender estimation from face images (UTKFace, Keras).

Modules: config (settings), data (labels, split), images (safe decoding), preprocess (cached arrays),
models (builders), pipeline (tf.data), train, evaluate, predict, faces (detection), plots, cli.
"""

__version__ = "0.1.0"
