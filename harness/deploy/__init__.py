"""``bench deploy``: what a trained run is worth deployed.

A run's saved weights become an ONNX model (batch norms folded into their convolutions), checked
against torch on the whole test set; then an int8 model (ONNX Runtime's static quantization, QDQ,
calibrated on training images only), whose accuracy, bytes, latency and peak activation memory are
measured on this machine. Results go into ``<run_id>.deploy.json`` beside the record, the ``.onnx``
files into ``<run_id>.deploy/``; the record itself is never modified.

Modules: ``export`` (weights -> folded model -> ONNX), ``quantize`` (static int8),
``measure`` (accuracy, latency, bytes, activation memory), ``store`` (the files beside the record,
pure Python for the leaderboard), ``pipeline`` (one run, start to end).
"""
