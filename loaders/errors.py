"""The error raised when a data set has no local copy, worded for the person running the job."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["DatasetNotFoundError", "require_data_dir"]


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not where the run configuration says they are.

    A :class:`FileNotFoundError`, so callers that already handle missing files keep working.
    The message is one paragraph meant to be read in a run log: which data set, the exact
    path(s) looked at, and how to get the data (run-config ``data-dir`` or ``download``).

    Parameters
    ----------
    message : str
        The full, human-readable paragraph.
    dataset : str, optional
        Name of the data set (as given to ``load_dataset``).
    paths : iterable of str, optional
        Absolute paths that were looked at.

    Notes
    -----
    Build one with :meth:`missing`, which writes the paragraph in the common wording. Only
    ``message`` is positional so that the exception pickles (Ray and Flower move exceptions
    between processes, and ``OSError`` re-creates itself from ``args``).
    """

    def __init__(self, message: str, *, dataset: str = "", paths: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.paths = tuple(paths)

    def __str__(self) -> str:
        # OSError's __str__ formats "[Errno ...]" when errno is set; ours never is, but keep the
        # message verbatim whatever the base class would do.
        return str(self.args[0]) if self.args else ""

    @classmethod
    def missing(
        cls,
        *,
        dataset: str,
        looked_at: Iterable[str | Path],
        how_to_get: str,
        reason: str = "",
    ) -> DatasetNotFoundError:
        """Build the error with the standard one-paragraph message.

        Parameters
        ----------
        dataset : str
            Data set name, as passed to ``load_dataset``.
        looked_at : iterable of str or Path
            The exact paths that were checked (shown absolute).
        how_to_get : str
            One or two sentences on how to obtain the files.
        reason : str, optional
            What exactly was wrong (missing files, a failed download), placed after the paths.

        Returns
        -------
        DatasetNotFoundError
        """
        paths = tuple(str(Path(p).expanduser().absolute()) for p in looked_at)
        where = ", ".join(paths) if paths else "no path, because run-config `data-dir` is empty"
        parts = [f"Data set {dataset!r} was not found. Looked at: {where}."]
        if reason:
            parts.append(reason.rstrip(".") + ".")
        parts.append(how_to_get.strip())
        return cls(" ".join(parts), dataset=dataset, paths=paths)


def require_data_dir(data_dir: str, *, dataset: str, how_to_get: str) -> Path:
    """Return ``data_dir`` as an absolute path, refusing an empty one.

    An empty ``data-dir`` is the run-config default. Falling back to the working directory
    would make a run's data depend on where a Flower process happened to start (a
    ClientApp's working directory is not the user's), so it is an error instead.

    Parameters
    ----------
    data_dir : str
        The run-config ``data-dir`` value; ``~`` is expanded.
    dataset : str
        Data set name, for the message.
    how_to_get : str
        How to obtain the data, for the message.

    Returns
    -------
    Path
        Absolute path (it may not exist; the caller reports what is missing in it).

    Raises
    ------
    DatasetNotFoundError
        If ``data_dir`` is empty or blank.
    """
    if not data_dir.strip():
        raise DatasetNotFoundError.missing(
            dataset=dataset,
            looked_at=(),
            how_to_get=how_to_get,
            reason="It is read from local files, and the current directory is deliberately not searched",
        )
    return Path(data_dir).expanduser().absolute()
