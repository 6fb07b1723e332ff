"""Replay: a queue's history read back from its log (read-only, not a consumer)."""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Iterator, Optional

from . import _fork
from ._errors import ForkedHandleError, ShmqError, raise_error
from ._native import ffi, lib
from ._types import ReplayedMessage

if TYPE_CHECKING:
    from ._queue import Queue


class Replay:
    """Queue.replay(): iterate to get ReplayedMessage values in log order. History the log no
    longer holds (retention deleted it) is counted in .lost, a damaged log file skipped in
    .damaged; the replay goes on after either."""

    def __init__(self, queue: "Queue", from_id: int, since_unix_ms: int, follow: Optional[float]):
        self._queue = queue
        self._gen = _fork.state[0]
        self._pid = _fork.state[1]
        self._follow = follow
        self.lost = 0
        self.damaged = 0
        frm = ffi.new("shmq_replay_from_t *")
        frm.id = from_id
        frm.unix_ms = since_unix_ms
        rp = ffi.new("shmq_replay_t **")
        rc = lib.shmq_replay_open(queue._handle(), frm, rp)
        if rc:
            raise_error(rc, "replay_open %s" % queue.name)
        self._r: object = rp[0]
        self._m = ffi.new("shmq_msg_t *")

    def __iter__(self) -> Iterator[ReplayedMessage]:
        return self

    def __next__(self) -> ReplayedMessage:
        if self._gen != _fork.state[0]:
            raise ForkedHandleError("shmq.Replay", self._pid, _fork.state[1])
        if self._r is None or self._queue._q is None:
            raise ValueError("shmq.Replay is closed")
        m = self._m
        while True:
            rc = lib.shmq_replay_next(self._r, m)
            if rc == 0:
                return ReplayedMessage(
                    int(m.id), bytes(ffi.buffer(m.data, m.len)), int(lib.shmq_replay_unix_ms(self._r))
                )
            if rc == -errno.EAGAIN:
                if self._follow is None:
                    raise StopIteration
                time.sleep(self._follow)
            elif rc == -errno.ENODATA:
                self.lost += 1
            elif rc == -errno.EBADMSG:
                self.damaged += 1
            else:
                raise_error(rc, "replay_next")

    def close(self) -> None:
        r = self._r
        if r is None:
            return
        self._r = None
        if self._gen == _fork.state[0]:
            lib.shmq_replay_close(r)

    def __enter__(self) -> "Replay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (ShmqError, AttributeError):
            pass
