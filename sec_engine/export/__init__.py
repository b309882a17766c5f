"""Writing the artifact: HF-format model, ONNX (fp32 and int8), torch int8, manifest."""
