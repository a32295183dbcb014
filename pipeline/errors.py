"""Errors that the entry points report as the user's to fix (one line, exit code 2, or a message in the app).

``UserError`` is for bad usage and input the library itself rejects (a missing file, an option out of
range, an output that would replace its input). The media, weights and engine errors keep their own
classes beside their modules; :data:`USER_FACING` lists them all, so every entry point catches the same.
"""

from __future__ import annotations

from syncnet.media import MediaError
from syncnet.weights import WeightsError


class UserError(Exception):
    """Bad input or environment: reported in one line, exit code 2."""


class EngineUnavailable(RuntimeError):  # noqa: N818 - reads as a state, like FileNotFound
    """The requested engine cannot run here (e.g. SyncNet without weights); the message says what to do."""


#: Every error class an entry point reports to the user rather than as a bug.
USER_FACING: tuple[type[Exception], ...] = (UserError, MediaError, WeightsError, EngineUnavailable)
