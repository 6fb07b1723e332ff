"""Consumer and Message: receive, ack, nack, extend, iteration.

A Message's data is a memoryview of the payload in shared memory (zero copy). It stays valid
until the message is acked or nacked, or its consumer (or queue) is closed; then it is
released, and using it raises ValueError (a released memoryview). Views derived from it
(slices, memoryview(msg.data), numpy.frombuffer) are not released with it and would then see
a reused slot: copy what you keep past the ack (bytes(msg.data)).
"""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Dict, Iterator, Optional, Type
from types import TracebackType

from . import _fork
from ._errors import ForkedHandleError, ShmqError, raise_error
from ._native import ffi, lib

if TYPE_CHECKING:
    from ._queue import Queue

_MSG_P = ffi.typeof("shmq_msg_t *")
_INT_MAX = 2**31 - 1
_NO_MESSAGE = (-errno.EAGAIN, -errno.ETIMEDOUT)


def timeout_ms(timeout: Optional[float]) -> int:
    """Seconds (None: forever) as the C calls' int milliseconds (-1: forever), rounded up."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    ms = int(timeout * 1000)
    if ms < timeout * 1000:
        ms += 1
    return min(ms, _INT_MAX)


def delay_ms(delay: Optional[float]) -> int:
    """Seconds as the C calls' uint32_t milliseconds (None: 0, which means "the default")."""
    if delay is None:
        return 0
    if delay < 0:
        raise ValueError("a delay cannot be negative")
    return min(timeout_ms(delay), 2**32 - 1)


class Message:
    """A delivered message. Acknowledge it with ack() (done), or nack() (deliver again later);
    until then it is in flight for this consumer only. As a context manager it acks when the
    block ends normally and nacks when it raises."""

    __slots__ = ("_consumer", "_m", "_view", "_settled")

    def __init__(self, consumer: "Consumer", m: object) -> None:
        self._consumer = consumer
        self._m = m
        self._view: Optional[memoryview] = None
        self._settled = False

    @property
    def id(self) -> int:
        """Unique per queue, increasing (in publish order for one producer)."""
        return int(self._m.id)  # type: ignore[attr-defined]

    @property
    def attempt(self) -> int:
        """Deliveries of this message so far, this one included (1: the first)."""
        return int(self._m.attempt)  # type: ignore[attr-defined]

    @property
    def redelivered(self) -> bool:
        """An earlier delivery of this message was not acked."""
        return bool(self._m.flags & lib.SHMQ_MSG_REDELIVERED)  # type: ignore[attr-defined]

    @property
    def data(self) -> memoryview:
        """The payload, in shared memory (zero copy), valid until ack/nack; then released."""
        v = self._view
        if v is None:
            if self._settled:
                raise ValueError("message %d was acked or nacked: its data is released" % self.id)
            m = self._m
            v = memoryview(ffi.buffer(m.data, m.len)).toreadonly()  # type: ignore[attr-defined]
            self._view = v
            self._consumer._views[id(self)] = self
        return v

    def __len__(self) -> int:
        return int(self._m.len)  # type: ignore[attr-defined]

    def __bytes__(self) -> bytes:
        """A copy of the payload."""
        return bytes(self.data)

    def ack(self) -> None:
        """Done with it: its slot is freed. StaleError if it was already acked, or taken back
        (this consumer was declared dead or hung, or its ack deadline passed)."""
        self._consumer.ack(self)

    def nack(self, delay: Optional[float] = None) -> None:
        """Give it back, to be delivered again after delay seconds (None: the queue's backoff
        for its attempt); at max_attempts it goes to the dead letters instead."""
        self._consumer.nack(self, delay)

    def extend(self, seconds: Optional[float] = None) -> None:
        """Move its ack deadline to now + seconds (None: the queue's ack_deadline_ms)."""
        self._consumer.extend(self, seconds)

    def _release(self) -> None:
        self._settled = True
        v = self._view
        if v is not None:
            self._view = None
            self._consumer._views.pop(id(self), None)
            v.release()

    def __enter__(self) -> "Message":
        return self

    def __exit__(
        self,
        et: Optional[Type[BaseException]],
        ev: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._settled:
            return
        if et is None:
            self.ack()
        else:
            self.nack()

    def __repr__(self) -> str:
        state = " settled" if self._settled else ""
        return "<shmq.Message id=%d attempt=%d len=%d%s>" % (
            self.id,
            self.attempt,
            len(self),
            state,
        )


class Consumer:
    """A consumer attached to a queue (Queue.consumer()). One thread at a time uses it.
    Iterating over it receives forever; messages(timeout) stops when nothing comes."""

    def __init__(self, queue: "Queue", name: str) -> None:
        self._queue = queue
        self._gen = _fork.state[0]
        self._pid = _fork.state[1]
        self._views: Dict[int, Message] = {}
        cp = ffi.new("shmq_consumer_t **")
        rc = lib.shmq_consumer_open(queue._handle(), name.encode(), cp)
        if rc:
            raise_error(rc, "consumer_open %s" % queue.name)
        self._c: object = cp[0]
        queue._consumers[id(self)] = self

    def _forked(self) -> ForkedHandleError:
        return ForkedHandleError("shmq.Consumer", self._pid, _fork.state[1])

    def _handle(self) -> object:
        if self._gen != _fork.state[0]:
            raise self._forked()
        c = self._c
        if c is None:
            raise ValueError("shmq.Consumer is closed")
        return c

    def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next ready message, waiting up to timeout seconds (None: forever, 0: do not
        wait); None when nothing came. The wait releases the GIL. StaleError if this consumer
        was declared dead (close it, open another), QueueRebuilt after a rebuild (reopen)."""
        if self._gen != _fork.state[0]:
            raise self._forked()
        c = self._c
        if c is None:
            raise ValueError("shmq.Consumer is closed")
        m = ffi.new(_MSG_P)
        ms = -1 if timeout is None else timeout_ms(timeout)
        rc = lib.shmq_receive(c, m, ms)
        if rc == 0:
            return Message(self, m)
        if rc in _NO_MESSAGE:
            return None
        if rc == -errno.EINTR:
            return self._receive_after_eintr(m, timeout)
        raise_error(rc, "receive")

    def _receive_after_eintr(self, m: object, timeout: Optional[float]) -> Optional[Message]:
        # A signal interrupted the sleep: its Python handler runs as this code executes (and
        # may raise, e.g. KeyboardInterrupt); otherwise wait for what is left of the timeout.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = lib.shmq_receive(self._handle(), m, -1 if left is None else timeout_ms(left))
            if rc == 0:
                return Message(self, m)
            if rc in _NO_MESSAGE:
                return None
            if rc != -errno.EINTR:
                raise_error(rc, "receive")

    def ack(self, msg: Message) -> None:
        """As Message.ack()."""
        c = self._handle()
        msg._release()
        rc = lib.shmq_ack(c, msg._m)
        if rc:
            raise_error(rc, "ack of message %d" % msg.id)

    def nack(self, msg: Message, delay: Optional[float] = None) -> None:
        """As Message.nack()."""
        c = self._handle()
        msg._release()
        rc = lib.shmq_nack(c, msg._m, delay_ms(delay))
        if rc:
            raise_error(rc, "nack of message %d" % msg.id)

    def extend(self, msg: Message, seconds: Optional[float] = None) -> None:
        """As Message.extend()."""
        rc = lib.shmq_extend(self._handle(), msg._m, delay_ms(seconds))
        if rc:
            raise_error(rc, "extend of message %d" % msg.id)

    def start_heartbeat(self, interval: Optional[float] = None) -> None:
        """Keep this consumer's heartbeat fresh from a C thread every interval seconds (None: a
        third of the queue's heartbeat timeout), so a long handler does not look hung.
        Stopped by close()."""
        rc = lib.shmq_consumer_heartbeat_thread(self._handle(), delay_ms(interval))
        if rc:
            raise_error(rc, "heartbeat thread")

    def messages(self, timeout: Optional[float] = None) -> Iterator[Message]:
        """Receive until a wait of timeout seconds brings nothing (None: forever)."""
        while True:
            msg = self.receive(timeout)
            if msg is None:
                return
            yield msg

    def __iter__(self) -> Iterator[Message]:
        return self.messages(None)

    def close(self) -> None:
        """Detach: messages not yet acked go back to the queue at once (their data is
        released). Idempotent. In a forked child it only forgets the handle (the parent's)."""
        c = self._c
        if c is None:
            return
        self._c = None
        self._queue._consumers.pop(id(self), None)
        for msg in list(self._views.values()):
            msg._release()
        if self._gen != _fork.state[0]:
            return
        rc = lib.shmq_consumer_close(c)
        if rc:
            raise_error(rc, "consumer_close")

    @property
    def closed(self) -> bool:
        return self._c is None

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (ShmqError, AttributeError):
            pass
