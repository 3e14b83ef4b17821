"""Deployable artifacts: ONNX (:mod:`.onnx`), TFLite (:mod:`.tflite`), TensorRT (:mod:`.tensorrt`), one or a
manifest of many (:mod:`.artifact`)."""
