"""Evaluation library for the CLIs in ``scripts/``: classical fusion baselines and the method comparison."""
