"""Exceptions: every failure of a shmq call is a ShmqError (an OSError) carrying the errno and
shmq_strerror()'s text; the common ones have their own subclass."""
from __future__ import annotations

import errno as _errno
from typing import Dict, NoReturn, Type

from ._native import ffi, lib


class ShmqError(OSError):
    """A shmq call failed: .errno is the positive errno, .strerror shmq_strerror()'s text,
    .detail what shmq_last_error_detail() added (which config field or header was refused
    and why; "" when it has nothing to add)."""

    def __init__(self, err: int, what: str = "", detail: str = "") -> None:
        text = ffi.string(lib.shmq_strerror(-err)).decode("utf-8", "replace")
        super().__init__(err, text)
        self.what = what
        self.detail = detail

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        prefix = self.what + ": " if self.what else ""
        detail = ": " + self.detail if self.detail else ""
        return "%s%s (%s)%s" % (prefix, self.strerror, name, detail)


class QueueNotFound(ShmqError):
    """ENOENT: no such queue (or no log to rebuild it from)."""


class QueueExists(ShmqError):
    """EEXIST: create of a queue that exists."""


class QueueFull(ShmqError):
    """EAGAIN from a publish: every slot is in use."""


class MessageTooLarge(ShmqError):
    """EMSGSIZE: the message is longer than the queue's max_msg_size."""


class StaleError(ShmqError):
    """ESTALE: the delivery was already acked or fenced, or the consumer was declared dead
    (close it and open a new one)."""


class QueueRebuilt(ShmqError):
    """EIDRM: the queue was rebuilt from its log since it was opened: close and reopen."""


class InProgress(ShmqError):
    """EINPROGRESS: a publish with the same dedup key is under way elsewhere: retry later."""


class ForkedHandleError(ShmqError):
    """A Queue, Consumer or Replay was used in a process forked after it was opened. A handle
    belongs to the process that opened it (the queue's registry entry names that pid, and its
    work would be counted as the parent's): open the queue again in the child. errno ECHILD."""

    def __init__(self, kind: str, owner_pid: int, pid: int) -> None:
        OSError.__init__(
            self,
            _errno.ECHILD,
            "%s opened by process %d used in process %d, forked after it was opened: a handle "
            "must not cross a fork; open the queue again in the child" % (kind, owner_pid, pid),
        )
        self.what = ""
        self.detail = ""


_BY_ERRNO: Dict[int, Type[ShmqError]] = {
    _errno.ENOENT: QueueNotFound,
    _errno.EEXIST: QueueExists,
    _errno.EAGAIN: QueueFull,
    _errno.EMSGSIZE: MessageTooLarge,
    _errno.ESTALE: StaleError,
    _errno.EIDRM: QueueRebuilt,
    _errno.EINPROGRESS: InProgress,
}


def raise_error(rc: int, what: str = "", detail: bool = False) -> NoReturn:
    """Raise the ShmqError for a negative return code rc of a call named what. detail: the call
    is one that sets shmq_last_error_detail() (create, open, set_config, a publish with
    headers), read before any other shmq call of this thread; the others leave it as an earlier
    call set it, so it is not read for them."""
    err = -rc
    text = ""
    if detail:
        text = ffi.string(lib.shmq_last_error_detail()).decode("utf-8", "replace")
    raise _BY_ERRNO.get(err, ShmqError)(err, what, text)
