"""Client-side defences of the iterative strategies behind one interface (:class:`Defence`).

Adding a defence: write one module with a subclass of :class:`Defence` decorated with
``@DEFENCES.register`` and import it below (or name it in the run config as
``"package.module:Class"``).
"""

from common.defences.base import DEFENCES, Defence, LocalUpdate, get_defence
# Registration order is the order tables list them in.
from common.defences import plain  # noqa: F401, I001 - registers the defence
from common.defences import fed_augmix  # noqa: F401, I001
from common.defences import dp_mix  # noqa: F401, I001

DEFAULT_DEFENCE = "none"

__all__ = ["DEFAULT_DEFENCE", "DEFENCES", "Defence", "LocalUpdate", "get_defence"]
