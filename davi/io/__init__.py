"""Files in and out: atomic writes, exports and their cards, model cards, ONNX, image files, the checkpoint converter, result chunks."""
