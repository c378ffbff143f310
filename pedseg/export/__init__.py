"""Export: per-domain ONNX graphs with folded batch norms, metadata and a verified parity check."""
