"""Scoring avatars against ground truth: image metrics, synthetic subjects, scoring and the oracle
(engine only; the bench scripts are thin command lines over it).
"""
