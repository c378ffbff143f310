"""Planning a training run: dataset fingerprints, measured step times and the budget-aware plan."""
