"""Evaluation: the paper's metrics (Dice, sensitivity, specificity, RAVD, ASSD, MSSD, HD95) and
the statistical tests of its Tables 2 and S2 (Kolmogorov–Smirnov, paired Wilcoxon)."""
