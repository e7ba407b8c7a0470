"""Scoring avatars against ground truth: image metrics, synthetic subjects (clothed, in a studio),
the view transform, scoring and the oracle (engine only; `bench/eval_reconstruction.py` is the
command line over it).
"""
