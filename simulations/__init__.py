"""Experiments that drive the Flower app through ``flwr run``, by role.

* :mod:`simulations.runtime`: process control (Flower's local simulation runtime, the
  ``flwr run`` command, the executor that computes one run);
* :mod:`simulations.sweep`: grids of runs (sweep files in ``simulations/sweeps/``), resumable;
  :mod:`simulations.compare` is a preset of it (one cell, mixup beside FedProx);
* :mod:`simulations.report`: the tables and plots of a sweep;
* :mod:`simulations.studies`: the privacy audit, the InstaHide and defence comparisons and the
  gradient audit, on one study base; the comparisons run their sweeps through the sweep's API.
"""
