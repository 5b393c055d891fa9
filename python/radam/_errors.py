"""Exceptions that more than one module of radam raises or lets through."""

from __future__ import annotations


class Error(Exception):
    """The base of radam's own exceptions: ``except radam.Error`` catches any of
    them. Each also keeps the built-in base it had before this one existed
    (``CheckpointError`` is a ``ValueError``, ``GpuError`` and
    ``ReentrantCallError`` are ``RuntimeError``), so existing handlers still work."""


class ReentrantCallError(Error, RuntimeError):
    """A call that changes an optimizer, made from inside another such call of
    the same optimizer (an lr schedule calling ``step``, say). A schedule that
    raises it is not a failing schedule: it passes through unwrapped."""
