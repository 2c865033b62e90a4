"""Studies built on the platform: each a command (``python -m simulations.studies.<name>``)
with its tables, figures and ``report.md`` index, on the shared base :mod:`simulations.studies.base`.

* :mod:`~simulations.studies.privacy_audit`: Tables 1-3 of the paper (tau x noise mode), measured leakage, panels;
* :mod:`~simulations.studies.instahide_compare`: InstaHide vs singularized mixup, accuracy (Table 4) and attacks;
* :mod:`~simulations.studies.defence_compare`: client-side iterative defences vs one-shot singularized mixup;
* :mod:`~simulations.studies.gradient_audit`: the gradient-leakage audit of an iterative run (a library the
  defence comparison calls).

Nothing is imported here, so that ``python -m`` runs a study's module exactly once.
"""
