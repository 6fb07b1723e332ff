"""Consumer and Message: receive, ack, nack, extend, iteration.

A Message's data is a memoryview of the payload in shared memory (zero copy). It stays valid
until the message is acked or nacked, or its consumer (or queue) is closed; then it is
released, and using it raises ValueError (a released memoryview). Views derived from it
(slices, memoryview(msg.data), numpy.frombuffer) are not released with it and would then see
a reused slot: copy what you keep past the ack (bytes(msg.data)).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type
from types import TracebackType

from . import _fork
from ._errors import ForkedHandleError, ShmqError, raise_error
from ._native import ffi, lib

if lib.pyshmq_install() != 0:  # fast.c's types, into shmq._native
    raise ImportError("shmq: the native module's C types could not be set up")
from ._native import ConsumerBase, MessageBase, _fast_init  # noqa: E402

if TYPE_CHECKING:
    from ._queue import Queue

_MSG_P = ffi.typeof("shmq_msg_t *")
_SIZE_P = ffi.typeof("size_t *")
_HEADER_ARRAY = ffi.typeof("shmq_header_t[]")
_INT_MAX = 2**31 - 1


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


class Message(MessageBase):  # type: ignore[misc]
    """A delivered message. Acknowledge it with ack() (done), or nack() (deliver again later);
    until then it is in flight for this consumer only. As a context manager it acks when the
    block ends normally and nacks when it raises. len(msg) is the payload's length; a Message
    is always true. Made by the consumer's C code (fast.c): it holds a copy of its shmq_msg_t;
    id, attempt, redelivered, data, len() and ack() are C."""

    __slots__ = ()

    if TYPE_CHECKING:

        @property
        def id(self) -> int:
            """Unique per queue, increasing (in publish order for one producer)."""

        @property
        def attempt(self) -> int:
            """Deliveries of this message so far, this one included (1: the first)."""

        @property
        def redelivered(self) -> bool:
            """An earlier delivery of this message was not acked."""

        @property
        def data(self) -> memoryview:
            """The payload, in shared memory (zero copy), valid until ack/nack; then
            released."""

        @property
        def _settled(self) -> bool: ...

        @property
        def _addr(self) -> int: ...

        @property
        def _consumer(self) -> "Consumer": ...

        def ack(self) -> None:
            """Done with it: its slot is freed. StaleError if it was already acked, or taken
            back (this consumer was declared dead or hung, or its ack deadline passed)."""

        def _settle(self) -> None: ...

        def __len__(self) -> int: ...

    def _cmsg(self) -> Any:
        return ffi.cast(_MSG_P, self._addr)

    def header_items(self) -> List[Tuple[str, bytes]]:
        """The message's headers as (key, value) pairs in publish order (copies); valid to ask
        until ack/nack, as data."""
        if self._settled:
            raise ValueError("message %d was acked or nacked: its headers are released" % self.id)
        c = self._consumer._handle()
        m = self._cmsg()
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

    def __bytes__(self) -> bytes:
        """A copy of the payload."""
        return bytes(self.data)

    def nack(self, delay: Optional[float] = None) -> None:
        """Give it back, to be delivered again after delay seconds (None: the queue's backoff
        for its attempt); at max_attempts it goes to the dead letters instead."""
        self._consumer.nack(self, delay)

    def extend(self, seconds: Optional[float] = None) -> None:
        """Move its ack deadline to now + seconds (None: the queue's ack_deadline_ms)."""
        self._consumer.extend(self, seconds)

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


class Consumer(ConsumerBase):  # type: ignore[misc]
    """A consumer attached to a queue (Queue.consumer()). One thread at a time uses it.
    Iterating over it receives forever; messages(timeout) stops when nothing comes. Iteration
    takes up to .prefetch ready messages in one call (never waiting to fill a batch) and hands
    them out one by one; receive() and receive_many() hand out those first."""

    def __init__(
        self, queue: "Queue", name: str, group: Optional[str] = None, prefetch: int = 16
    ) -> None:
        self._queue = queue
        self._gen = _fork.state[0]
        self._pid = _fork.state[1]
        self._c: object = None
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.prefetch = prefetch
        cp = ffi.new("shmq_consumer_t **")
        if group is None:
            rc = lib.shmq_consumer_open(queue._handle(), name.encode(), cp)
        else:
            rc = lib.shmq_consumer_open_group(queue._handle(), group.encode(), name.encode(), cp)
        if rc:
            raise_error(rc, "consumer_open %s" % queue.name)
        self._c = cp[0]
        self._set_handle(int(ffi.cast("uintptr_t", self._c)), queue._hold_gil)
        queue._consumers[id(self)] = self

    if TYPE_CHECKING:
        prefetch: int

        @property
        def pending(self) -> int:
            """Messages iteration received and has not handed out yet: in flight for this
            consumer (receive() hands them out first; close() gives them back)."""

        def receive(self, timeout: Optional[float] = None) -> Optional[Message]:
            """The next ready message, waiting up to timeout seconds (None: forever, 0: do not
            wait); None when nothing came. The wait releases the GIL. StaleError if this
            consumer was declared dead (close it, open another), QueueRebuilt after a rebuild
            (reopen)."""

        def receive_many(self, max: int = 64, timeout: Optional[float] = None) -> List[Message]:
            """Up to max ready messages in one call (shmq_receive_batch): waits as receive()
            for the first, then takes what is ready without waiting again. An empty list when
            nothing came. Each is a Message as receive() returns; ack them together with
            ack_many()."""

        def ack_many(self, msgs: Sequence[Message]) -> None:
            """Acknowledge msgs in one call (shmq_ack_batch), each as ack() would: one that
            fails does not stop the others. Releases every message's data. Raises the error of
            the first that failed (StaleError, ...), with .done set to how many were acked."""

        def _set_handle(self, address: int, hold_gil: bool) -> None: ...

        def _release_views(self) -> None: ...

        def _iter_ms(self, ms: int) -> Iterator[Message]: ...

        @property
        def _busy(self) -> bool: ...

    def _forked(self) -> ForkedHandleError:
        return ForkedHandleError("shmq.Consumer", self._pid, _fork.state[1])

    def _handle(self) -> object:
        if self._gen != _fork.state[0]:
            raise self._forked()
        c = self._c
        if c is None:
            raise ValueError("shmq.Consumer is closed")
        return c

    def _ack_many_failed(self, rc: int, done: int, n: int) -> None:
        try:
            raise_error(rc, "ack_many: %d of %d acked" % (done, n))
        except ShmqError as e:
            e.done = done  # type: ignore[attr-defined]
            raise

    def ack(self, msg: Message) -> None:
        """As Message.ack()."""
        msg.ack()

    def nack(self, msg: Message, delay: Optional[float] = None) -> None:
        """As Message.nack()."""
        c = self._handle()
        msg._settle()
        rc = lib.shmq_nack(c, msg._cmsg(), delay_ms(delay))
        if rc:
            raise_error(rc, "nack of message %d" % msg.id)

    def extend(self, msg: Message, seconds: Optional[float] = None) -> None:
        """As Message.extend()."""
        rc = lib.shmq_extend(self._handle(), msg._cmsg(), delay_ms(seconds))
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
        """Receive until a wait of timeout seconds brings nothing (None: forever); up to
        .prefetch ready messages a call."""
        self._handle()
        return self._iter_ms(-1 if timeout is None else timeout_ms(timeout))

    def __iter__(self) -> Iterator[Message]:
        return self.messages(None)

    def close(self) -> None:
        """Detach: messages not yet acked go back to the queue at once (their data is
        released). Idempotent. In a forked child it only forgets the handle (the parent's)."""
        c = self._c
        if c is None:
            return
        if self._busy and self._gen == _fork.state[0]:
            raise RuntimeError(
                "shmq.Consumer: close() while another thread is receiving on it (a consumer is "
                "used by one thread at a time)"
            )
        self._c = None
        self._set_handle(0, False)
        self._queue._consumers.pop(id(self), None)
        self._release_views()
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


_fast_init(Message, raise_error)
