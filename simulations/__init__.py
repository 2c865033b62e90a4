"""Experiments that drive the Flower app through `flwr run`."""
