"""Serving: loading a model and its card (modelio), batched inference (inference), whole photos (predict, faces,
annotate), TFLite models (litert, export), the webcam (live) and shipping a trained model (promote).

Serving a TFLite export imports neither Keras nor any model builder: this package imports nothing eagerly.
"""
