"""Forks and radam's optimizers: a child process starts from whole steps.

``os.register_at_fork`` handlers hold the lock of every live optimizer across a
fork, after letting a call in flight on another thread finish (waiting at most
:data:`FORK_WAIT_S`): the child must not start with a lock held by a thread it
does not have, nor with params half written by it. An optimizer whose call did
not end in time is marked torn in the child (:data:`TORN` in its ``_busy``), and
:func:`refuse_torn` then refuses every call that would read or change it.

An optimizer takes part through :func:`track`; it has ``_lock`` (an RLock),
``_busy`` (the name of a call in progress, or None) and ``_torn_by_fork``.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

# How long a fork waits for a call in flight on another thread to finish.
FORK_WAIT_S = 60.0
# ``_busy`` of an optimizer in a child forked while a call of it did not end.
TORN = "fork"

_live: weakref.WeakSet[Any] = weakref.WeakSet()  # every optimizer tracked
_one_fork = threading.Lock()  # one fork at a time goes through the handlers
_held: list[Any] = []


def track(opt: Any) -> None:
    """Hold ``opt``'s lock across every fork from now on."""
    opt._torn_by_fork = False
    _live.add(opt)


def refuse_torn(opt: Any, call: str) -> None:
    """Refuse ``call`` on an optimizer torn by a fork (see the module's doc)."""
    if opt._busy == TORN:
        raise RuntimeError(
            f"{call}(): this process was forked while another thread was inside a call "
            f"of this optimizer that did not end within {FORK_WAIT_S:.0f} s, so its params "
            "and state may be half-written here; build a new optimizer"
        )


def _before_fork() -> None:
    _one_fork.acquire()
    for opt in list(_live):
        if opt._lock.acquire(timeout=FORK_WAIT_S):
            _held.append(opt)
        else:  # a call that does not end (a schedule waiting on this thread?)
            opt._torn_by_fork = True


def _after_fork(child: bool) -> None:
    # The forking thread holds what _before_fork acquired, in the child too.
    for opt in _held:
        opt._lock.release()
    _held.clear()
    for opt in list(_live):
        if opt._torn_by_fork and child:
            # Its lock is held by a thread the child does not have, mid-call.
            opt._lock = threading.RLock()
            opt._busy = TORN
        opt._torn_by_fork = False
    _one_fork.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=lambda: _after_fork(child=False),
        after_in_child=lambda: _after_fork(child=True),
    )
