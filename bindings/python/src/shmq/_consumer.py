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
from itertools import repeat
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Type
from types import TracebackType

from . import _fork
from ._errors import ForkedHandleError, ShmqError, raise_error
from ._native import ffi, lib

if TYPE_CHECKING:
    from ._queue import Queue

_MSG_P = ffi.typeof("shmq_msg_t *")
_MSG_ARRAY = ffi.typeof("shmq_msg_t[]")
_SIZE_P = ffi.typeof("size_t *")
_SIZE_ARRAY = ffi.typeof("size_t[]")
_HEADER_ARRAY = ffi.typeof("shmq_header_t[]")
_CHUNK = 64
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


class _Deliveries:
    """The shmq_msg_t array one receive() or receive_many() call filled, shared by its
    Messages: settled[i] becomes 1 when message i is acked or nacked (or its consumer closed),
    views[i] is its data's memoryview once asked for. Settling releases the view."""

    __slots__ = ("consumer", "arr", "settled", "views")

    def __init__(self, consumer: "Consumer", arr: Any, n: int) -> None:
        self.consumer = consumer
        self.arr = arr
        self.settled = bytearray(n)
        self.views: Optional[Dict[int, memoryview]] = None

    def view(self, i: int) -> memoryview:
        if self.settled[i] or self.consumer._c is None:
            raise ValueError(
                "message %d was acked or nacked (or its consumer closed): its data is released"
                % self.arr[i].id
            )
        views = self.views
        if views is None:
            views = self.views = {}
            self.consumer._open[id(self)] = self  # released by the consumer's close
        v = views.get(i)
        if v is None:
            m = self.arr[i]
            v = views[i] = memoryview(ffi.buffer(m.data, m.len)).toreadonly()
        return v

    def settle(self, i: int) -> None:
        self.settled[i] = 1
        views = self.views
        if views:
            v = views.pop(i, None)
            if v is not None:
                v.release()
            if not views:
                self.consumer._open.pop(id(self), None)

    def settle_all(self) -> None:
        self.settled[:] = _ONES[: len(self.settled)] if len(self.settled) <= 4096 else b"\1" * len(
            self.settled
        )
        views = self.views
        if views:
            for v in views.values():
                v.release()
            views.clear()
            self.consumer._open.pop(id(self), None)


_ONES = b"\1" * 4096


class Message(tuple):  # type: ignore[type-arg]
    """A delivered message. Acknowledge it with ack() (done), or nack() (deliver again later);
    until then it is in flight for this consumer only. As a context manager it acks when the
    block ends normally and nacks when it raises. len(msg) is the payload's length; a Message
    is always true."""

    # (deliveries, index, length): a tuple, so that receive_many() makes them without Python
    # code
    __slots__ = ()

    @property
    def id(self) -> int:
        """Unique per queue, increasing (in publish order for one producer)."""
        return int(self[0].arr[self[1]].id)

    @property
    def attempt(self) -> int:
        """Deliveries of this message so far, this one included (1: the first)."""
        return int(self[0].arr[self[1]].attempt)

    @property
    def redelivered(self) -> bool:
        """An earlier delivery of this message was not acked."""
        return bool(self[0].arr[self[1]].flags & lib.SHMQ_MSG_REDELIVERED)

    @property
    def data(self) -> memoryview:
        """The payload, in shared memory (zero copy), valid until ack/nack; then released."""
        return self[0].view(self[1])  # type: ignore[no-any-return]

    @property
    def _settled(self) -> bool:
        return bool(self[0].settled[self[1]])

    def header_items(self) -> List[Tuple[str, bytes]]:
        """The message's headers as (key, value) pairs in publish order (copies); valid to ask
        until ack/nack, as data."""
        d, i, _ = self
        if d.settled[i]:
            raise ValueError("message %d was acked or nacked: its headers are released" % self.id)
        c = d.consumer._handle()
        m = d.arr + i
        n = ffi.new(_SIZE_P)
        room = 8
        while True:
            out = ffi.new(_HEADER_ARRAY, room)
            rc = lib.shmq_msg_headers(c, m, out, room, n)
            if rc:
                raise_error(rc, "headers of message %d" % self.id)
            if n[0] <= room:
                return [
                    (ffi.unpack(h.key, h.key_len).decode("ascii"), ffi.unpack(h.value, h.value_len))
                    for h in out[0 : n[0]]
                ]
            room = n[0]

    @property
    def headers(self) -> Dict[str, bytes]:
        """The message's headers as a dict (a key published twice: its last value)."""
        return dict(self.header_items())

    def __len__(self) -> int:
        return self[2]  # type: ignore[no-any-return]

    def __bool__(self) -> bool:
        return True

    def __bytes__(self) -> bytes:
        """A copy of the payload."""
        return bytes(self.data)

    def ack(self) -> None:
        """Done with it: its slot is freed. StaleError if it was already acked, or taken back
        (this consumer was declared dead or hung, or its ack deadline passed)."""
        d, i, _ = self
        cons = d.consumer
        c = cons._c
        if c is None or cons._gen != _fork.state[0]:
            c = cons._handle()  # raises
        if d.views:
            d.settle(i)
        else:
            d.settled[i] = 1
        rc = lib.shmq_ack(c, d.arr + i if i else d.arr)
        if rc:
            raise_error(rc, "ack of message %d" % self.id)

    def nack(self, delay: Optional[float] = None) -> None:
        """Give it back, to be delivered again after delay seconds (None: the queue's backoff
        for its attempt); at max_attempts it goes to the dead letters instead."""
        self[0].consumer.nack(self, delay)

    def extend(self, seconds: Optional[float] = None) -> None:
        """Move its ack deadline to now + seconds (None: the queue's ack_deadline_ms)."""
        self[0].consumer.extend(self, seconds)

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


class MessageBatch(List[Message]):
    """What receive_many() returns: a list of Messages that ack_many() hands to C as it is
    while it is unchanged (else it copies the messages' deliveries into a new array)."""

    def __init__(self, msgs: Iterable[Message], d: _Deliveries) -> None:
        super().__init__(msgs)
        self._d = d
        self._orig = list(self)


class Consumer:
    """A consumer attached to a queue (Queue.consumer()). One thread at a time uses it.
    Iterating over it receives forever; messages(timeout) stops when nothing comes."""

    def __init__(self, queue: "Queue", name: str, group: Optional[str] = None) -> None:
        self._queue = queue
        self._gen = _fork.state[0]
        self._pid = _fork.state[1]
        self._open: Dict[int, _Deliveries] = {}  # deliveries with data views
        self._chunk: Any = None  # receive()'s array, and its next free entry
        self._next = _CHUNK
        cp = ffi.new("shmq_consumer_t **")
        if group is None:
            rc = lib.shmq_consumer_open(queue._handle(), name.encode(), cp)
        else:
            rc = lib.shmq_consumer_open_group(queue._handle(), group.encode(), name.encode(), cp)
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
        # Single deliveries go into the next entry of a shared array (one allocation per
        # _CHUNK messages); a Message keeps its array alive.
        d = self._chunk
        i = self._next
        if i == _CHUNK:
            d = self._chunk = _Deliveries(self, ffi.new(_MSG_ARRAY, _CHUNK), _CHUNK)
            i = self._next = 0
        m = d.arr + i
        ms = -1 if timeout is None else timeout_ms(timeout)
        rc = lib.shmq_receive(c, m, ms)
        if rc == 0:
            self._next = i + 1
            return Message((d, i, m.len))
        if rc in _NO_MESSAGE:
            return None
        if rc == -errno.EINTR:
            return self._receive_after_eintr(timeout)
        raise_error(rc, "receive")

    def _receive_after_eintr(self, timeout: Optional[float]) -> Optional[Message]:
        # A signal interrupted the sleep: its Python handler runs as this code executes (and
        # may raise, e.g. KeyboardInterrupt); otherwise wait for what is left of the timeout.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            d, i = self._chunk, self._next
            m = d.arr + i
            rc = lib.shmq_receive(self._handle(), m, -1 if left is None else timeout_ms(left))
            if rc == 0:
                self._next = i + 1
                return Message((d, i, m.len))
            if rc in _NO_MESSAGE:
                return None
            if rc != -errno.EINTR:
                raise_error(rc, "receive")

    def receive_many(self, max: int = 64, timeout: Optional[float] = None) -> "MessageBatch":
        """Up to max ready messages in one call (shmq_receive_batch): waits as receive() for
        the first, then takes what is ready without waiting again. An empty list when nothing
        came. Each is a Message as receive() returns; ack them together with ack_many()."""
        c = self._handle()
        if max < 1:
            raise ValueError("receive_many: max must be at least 1")
        arr = ffi.new(_MSG_ARRAY, max)
        got = ffi.new(_SIZE_P)
        ms = -1 if timeout is None else timeout_ms(timeout)
        while True:
            rc = lib.shmq_receive_batch(c, arr, max, got, ms)
            if rc == 0:
                n = got[0]
                d = _Deliveries(self, arr, n)
                lens = ffi.new(_SIZE_ARRAY, n)
                lib.pyshmq_lens(arr, n, lens)
                return MessageBatch(map(Message, zip(repeat(d, n), range(n), ffi.unpack(lens, n))), d)
            if rc in _NO_MESSAGE:
                return []
            if rc != -errno.EINTR:
                raise_error(rc, "receive_many")
            c = self._handle()  # a signal: its handler runs here, then wait again

    def ack_many(self, msgs: Sequence[Message]) -> None:
        """Acknowledge msgs in one call (shmq_ack_batch), each as ack() would: one that fails
        does not stop the others. Releases every message's data. Raises the error of the first
        that failed (StaleError, ...), with .done set to how many were acked. A list from
        receive_many() is passed to C as it is; other lists are copied first."""
        c = self._handle()
        n = len(msgs)
        if n == 0:
            return
        if type(msgs) is MessageBatch and msgs == msgs._orig:
            d = msgs._d  # as receive_many() returned it: all of d.arr, in order
            d.settle_all()
            arr = d.arr
        else:
            arr = ffi.new(_MSG_ARRAY, n)
            for k, m in enumerate(msgs):
                d, i, _ = m
                d.settle(i)
                arr[k] = d.arr[i]
        done = ffi.new(_SIZE_P)
        rc = lib.shmq_ack_batch(c, arr, n, done)
        if rc:
            try:
                raise_error(rc, "ack_many: %d of %d acked" % (done[0], n))
            except ShmqError as e:
                e.done = int(done[0])  # type: ignore[attr-defined]
                raise

    def ack(self, msg: Message) -> None:
        """As Message.ack()."""
        msg.ack()

    def nack(self, msg: Message, delay: Optional[float] = None) -> None:
        """As Message.nack()."""
        c = self._handle()
        d, i, _ = msg
        d.settle(i)
        rc = lib.shmq_nack(c, d.arr + i, delay_ms(delay))
        if rc:
            raise_error(rc, "nack of message %d" % msg.id)

    def extend(self, msg: Message, seconds: Optional[float] = None) -> None:
        """As Message.extend()."""
        d, i, _ = msg
        rc = lib.shmq_extend(self._handle(), d.arr + i, delay_ms(seconds))
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
        for d in list(self._open.values()):
            d.settle_all()
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
