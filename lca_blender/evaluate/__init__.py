"""Scoring avatars against ground truth: image metrics, synthetic subjects, scoring and the oracle
(engine only; `bench/eval_reconstruction.py` is the command line over it).
"""
