"""Typed exceptions of the workbench.

Every error a user can cause derives from :class:`MlipftError` and carries a one-line,
specific message that the pages show as a message and the command line prints before
exiting non-zero.
"""

from __future__ import annotations


class MlipftError(Exception):
    """Base class of all errors caused by user input or the environment."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class UnknownModelError(MlipftError):
    """A model name is neither in the registry nor an existing file."""

    code = "unknown_model"


class ModelNotAvailableError(MlipftError):
    """An official model is not cached and could not be downloaded (e.g. offline)."""

    code = "model_not_available"

    def __init__(self, message: str, *, missing_file: str, url: str | None = None) -> None:
        super().__init__(message)
        self.missing_file = missing_file
        self.url = url


class UntrustedModelError(MlipftError):
    """A local model file (a pickle) was not confirmed as trusted."""

    code = "untrusted_model"


class ModelLoadError(MlipftError):
    """A file exists but is not a loadable MACE model."""

    code = "model_load_failed"


class DataError(MlipftError):
    """A dataset cannot be read or used (unreadable, empty, unknown keys, ...)."""

    code = "data_error"


class HeadError(MlipftError):
    """A requested model head does not exist."""

    code = "unknown_head"
