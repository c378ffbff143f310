"""Inference: per-domain prediction of whole volumes and the paper's 3D post-processing."""
