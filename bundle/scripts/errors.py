"""Errors for bad input, and the command-line layer that turns them into a clear message."""

from __future__ import annotations

import os
import sys


class InputError(ValueError):
    """Bad input: names the file (or config key) and says what is wrong with it."""

    def __init__(self, path: str | os.PathLike | None, problem: str):  # noqa: B042 (pickled by __reduce__)
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):
        """Pickle by path and problem, so the error raised in a worker process arrives whole."""
        return type(self), (self.path, self.problem)


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The InputError behind ``exc`` (MONAI's config parser wraps what an expression raises)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    """Print bad input as one ``error: <file>: <problem>`` line and exit 2, without a traceback.

    Any other exception keeps Python's usual traceback: those are bugs, not user mistakes.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        found = find_input_error(exc)
        if found is None:
            previous(exc_type, exc, tb)
            return
        print(f"error: {found}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)

    sys.excepthook = hook
