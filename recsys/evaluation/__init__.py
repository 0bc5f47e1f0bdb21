"""Offline evaluation: metric functions (metrics.py) and evaluators that score recsys on labelled data."""
