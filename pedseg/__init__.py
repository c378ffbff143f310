"""pedseg: multi-domain segmentation for sparse pediatric MR datasets.

Importing :mod:`pedseg` is cheap: torch, onnxruntime, nibabel and SimpleITK are imported only by the
modules that need them.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
