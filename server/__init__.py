"""Flower ServerApp: the one-shot protocol and the iterative baselines."""
