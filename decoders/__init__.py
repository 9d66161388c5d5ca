"""Decoders: the patch dictionary and the painting kernel, and the non-RL baselines' decoders."""
