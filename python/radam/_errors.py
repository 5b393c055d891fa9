"""Exceptions that more than one module of radam raises or lets through."""

from __future__ import annotations


class ReentrantCallError(RuntimeError):
    """A call that changes an optimizer, made from inside another such call of
    the same optimizer (an lr schedule calling ``step``, say). A schedule that
    raises it is not a failing schedule: it passes through unwrapped."""
