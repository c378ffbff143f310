"""Data pipeline: preprocessing, caching, sampling, augmentation and phantom (synthetic) domains."""
