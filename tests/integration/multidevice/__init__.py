"""Scripts the multi-device tests run in subprocesses (``python -m``)."""
