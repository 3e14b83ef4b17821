"""Deployable artifacts. ONNX here; TFLite and TensorRT come with the export issue."""
