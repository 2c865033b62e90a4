r"""The one attack interface, and the registry of attacks by name.

Every reconstruction attack of this package is a subclass of :class:`Attack` and is
registered in :data:`ATTACKS` with one decorator line, so that a run config (or a test) can
name it::

    @ATTACKS.register
    class MyAttack(Attack[ObservedRelease, AttackerKnowledge]):
        name = "my-attack"
        observes = ObservedRelease
        requires = AttackerKnowledge

        def reconstruct(self, observed, knowledge) -> Reconstruction: ...

Threat model
------------
An attack is a function of two objects only (:mod:`attacks.threat_model`):

* ``observed`` - exactly what the server received: :class:`~attacks.threat_model.ObservedRelease`
  for a one-shot release (mixed inputs and soft labels), or
  :class:`~attacks.update_threat_model.ObservedUpdate` for an iterative method's weight update;
* ``knowledge`` - the side information the threat model grants on top of that, of the type
  the attack names in ``requires``: :class:`~attacks.threat_model.AttackerKnowledge`
  (singularized mixup), :class:`~attacks.instahide.InstaHideKnowledge` or
  :class:`~attacks.update_threat_model.GradientAttackerKnowledge`. Fields that were not
  granted are ``None`` and an attack that needs one raises ``ValueError`` naming it.

Neither type has a field through which private inputs could reach the attack, and
``reconstruct`` takes nothing else. What an attack may hold besides its hyper-parameters is
what the attacker owns independently of the attacked party (e.g. the U-Net attack's public
data set or the network trained on it). Scoring a reconstruction against the originals is
a separate evaluation step (:mod:`attacks.evaluation`), never done by an attack.

This module imports nothing from the rest of the package, so that
:mod:`attacks.threat_model` can re-export :class:`Attack` without an import cycle.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from common.registry import Registry

if TYPE_CHECKING:  # only for annotations: threat_model imports this module
    from .threat_model import Reconstruction

__all__ = ["ATTACKS", "Attack"]

ObservedT = TypeVar("ObservedT")
KnowledgeT = TypeVar("KnowledgeT")


class Attack(ABC, Generic[ObservedT, KnowledgeT]):
    """A reconstruction attack: sees what the server observed and the granted knowledge, nothing else.

    Class attributes
    ----------------
    name : str
        The name the attack is registered under and writes into
        :attr:`Reconstruction.method <attacks.threat_model.Reconstruction.method>`.
    observes : type
        The type of ``observed`` it attacks (:class:`~attacks.threat_model.ObservedRelease`
        or :class:`~attacks.update_threat_model.ObservedUpdate`).
    requires : type
        The type of attacker knowledge it reads.

    A concrete subclass that leaves one of the three undefined is an error at class
    creation (not at the first attack), and so is a ``reconstruct`` whose parameters are
    not exactly ``(self, observed, knowledge)``.

    Notes
    -----
    ``reconstruct`` does not check the argument types (duck-typed stand-ins are allowed in
    tests); :meth:`accepts` says whether a pair of objects has the declared types.
    """

    name: ClassVar[str]
    observes: ClassVar[type]
    requires: ClassVar[type]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"attack {cls.__qualname__} needs a non-empty class attribute 'name'")
        for attribute in ("observes", "requires"):
            if not isinstance(getattr(cls, attribute, None), type):
                raise TypeError(f"attack {cls.__qualname__} needs a class attribute {attribute!r} (a type)")
        parameters = list(inspect.signature(cls.reconstruct).parameters)
        if parameters != ["self", "observed", "knowledge"]:
            raise TypeError(
                f"{cls.__qualname__}.reconstruct must take exactly (self, observed, knowledge), got {parameters}"
            )

    @abstractmethod
    def reconstruct(self, observed: ObservedT, knowledge: KnowledgeT) -> Reconstruction:
        """Estimate the private inputs behind ``observed`` using only ``knowledge`` on top.

        Returns
        -------
        Reconstruction
            ``x`` holds one estimate per private sample, ``method`` is :attr:`name`.
        """

    @classmethod
    def accepts(cls, observed: object, knowledge: object) -> bool:
        """Whether ``observed`` and ``knowledge`` have the types this attack declares."""
        return isinstance(observed, cls.observes) and isinstance(knowledge, cls.requires)


ATTACKS: Registry[Attack] = Registry("attack")
"""Attacks by name: ``ATTACKS.get("linear")``, ``ATTACKS.create("carlini-instahide", steps=300)``.

Importing :mod:`attacks` registers all four attacks of the package ("linear", "unet",
"carlini-instahide", "inverting-gradients"); an attack defined elsewhere is reachable as
``"package.module:Class"`` once decorated with ``@ATTACKS.register``.
"""
