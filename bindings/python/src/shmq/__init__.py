"""shmq: a crash-safe shared-memory message queue for processes on one host (Python binding).

    import shmq
    with shmq.Queue.create("orders", capacity=4096) as q:
        q.publish(b"hello")
        with q.consumer() as c:
            msg = c.receive(timeout=1.0)
            print(bytes(msg.data))
            msg.ack()

See the README's "Python" section. Handles must not cross fork() (ForkedHandleError).
"""
from ._consumer import Consumer, Message
from ._errors import (
    ForkedHandleError,
    InProgress,
    MessageTooLarge,
    QueueExists,
    QueueFull,
    QueueNotFound,
    QueueRebuilt,
    ShmqError,
    StaleError,
)
from ._native import ffi as _ffi, lib as _lib
from ._queue import Queue
from ._replay import Replay
from ._seen import Seen
from ._types import (
    Config,
    ConsumerState,
    ConsumerStats,
    DeadLetter,
    DeadReason,
    Durability,
    GroupInfo,
    GroupStats,
    PeekedMessage,
    ReplayedMessage,
    SeenStats,
    Stats,
)

__version__: str = _ffi.string(_lib.shmq_version()).decode()
"""The version of the libshmq in use."""

__all__ = [
    "Config",
    "Consumer",
    "ConsumerState",
    "ConsumerStats",
    "DeadLetter",
    "DeadReason",
    "Durability",
    "ForkedHandleError",
    "GroupInfo",
    "GroupStats",
    "InProgress",
    "Message",
    "MessageTooLarge",
    "PeekedMessage",
    "Queue",
    "QueueExists",
    "QueueFull",
    "QueueNotFound",
    "QueueRebuilt",
    "Replay",
    "ReplayedMessage",
    "Seen",
    "SeenStats",
    "ShmqError",
    "StaleError",
    "Stats",
]
