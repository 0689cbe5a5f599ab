"""Evaluation: metrics, the digit classifier's realism figures, bootstrap intervals, grid search, timing, distribution shifts."""
