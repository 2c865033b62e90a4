"""Process control: Flower's local simulation runtime and how one run is executed.

* :mod:`~simulations.runtime.local_flower`: the environment a local simulation needs, the
  ``flwr run`` command line, run-id parsing, ``flwr stop`` and stopping the managed local
  SuperLink;
* :mod:`~simulations.runtime.executor`: the :class:`Executor` protocol the sweep computes
  runs through, and :class:`FlowerExecutor` (one ``flwr run`` per run);
* :mod:`~simulations.runtime.federation` (``python -m simulations.runtime.federation``): set the
  local federation's size and resources;
* :mod:`~simulations.runtime.stop` (``python -m simulations.runtime.stop``): stop the local SuperLink.

Nothing is imported here, so that ``python -m`` runs a module of this package exactly once.
"""
