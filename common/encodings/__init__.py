"""One-shot encodings behind one interface (:class:`Encoding`), by run-config name.

Adding an encoding: write one module with a subclass of :class:`Encoding` decorated with
``@ENCODINGS.register`` and import it below (or name it in the run config as
``"package.module:Class"``).
"""

from common.encodings.base import ENCODINGS, EncodedRows, Encoding, EncodingOutput, get_encoding, release_nbytes
from common.encodings import instahide, pooled, singularized  # noqa: F401 - registers the encodings

DEFAULT_ENCODING = "singularized"

__all__ = ["DEFAULT_ENCODING", "ENCODINGS", "EncodedRows", "Encoding", "EncodingOutput", "get_encoding",
           "release_nbytes"]
