"""Errors that the entry points report as the user's to fix (one line, exit code 2, or a message in the app).

``UserError`` is for bad usage and input the library itself rejects (a missing file, an option out of
range, an output that would replace its input); ``EngineUnavailable`` for an engine that cannot run here.
They, and ``syncnet``'s media, crop and weights errors, all derive from
:class:`syncnet.errors.UserFacingError`: :data:`USER_FACING` is what every entry point catches.
"""

from __future__ import annotations

from syncnet.errors import UserFacingError


class UserError(UserFacingError):
    """Bad input or environment: reported in one line, exit code 2."""


class EngineUnavailable(UserFacingError, RuntimeError):  # noqa: N818 - reads as a state, like FileNotFound
    """The requested engine cannot run here (e.g. SyncNet without weights); the message says what to do."""


#: What an entry point reports to the user rather than as a bug: every error derives from this one base.
USER_FACING: tuple[type[Exception], ...] = (UserFacingError,)
