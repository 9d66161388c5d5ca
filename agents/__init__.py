"""Encoders that write painting programs: the RNN policy, its estimators, greedy search."""
