"""The one base class of every error that is the user's to fix (bad input, missing weights, an engine that
cannot run here), so every entry point maps them the same way: one line and exit code 2 on the command
line, a message in the app. Anything else is a bug and is reported as one.

It lives in ``syncnet`` (the lowest package) so that both ``syncnet``'s errors and ``pipeline``'s derive
from it; each error keeps its older base too (``ValueError``, ``RuntimeError``), so existing ``except``
clauses still catch it.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message tells the user what is wrong and what to do."""
