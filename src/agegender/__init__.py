"""agegender: age and gender estimation from face images (UTKFace, Keras).

Sub-packages: data (labels, splits, image decoding, cached arrays, tf.data pipeline), models (builders, backbones,
the VGG16 recipe, the face-descriptor step), training (the training loop, recipes, schedules, teacher), serving
(model files, inference, photos and faces, TFLite, webcam, promotion) and evaluation (metrics, photo evaluation,
plots, reference figures). On top: config (settings), cli (the ``agegender`` command), app (Streamlit) and notebook
(helpers for the notebooks). Nothing here imports the repository's research/ folder.
"""

__version__ = "0.1.0"
