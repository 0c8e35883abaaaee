"""The file names inside a stored version directory (``<store>/models/<m>/versions/<n>/``)."""

MAIN_GRAPH = "model.onnx"
DECODER_GRAPH = "decoder.onnx"
WEIGHTS_FILE = "weights.pt"  # PyTorch state for further fine-tuning; the API never reads it
MANIFEST_FILE = "manifest.json"
