"""Seen: the consumer-side dedup helper (include/shmq/seen.h, README "Processing a message
once"): a bounded set of processed keys of this process, optionally backed by a file so it
survives a restart. The exactly-once-processing recipe:

    with shmq.Seen("/var/lib/app/orders.seen", 100_000) as seen:
        for msg in consumer:
            if seen.check(msg.id):       # processed before: a redelivery
                msg.ack()
                continue
            process(msg)
            seen.add(msg.id)             # durable when it returns (with a file)
            msg.ack()
"""
from __future__ import annotations

import os
from typing import Optional, Union

from ._errors import raise_error
from ._native import ffi, lib
from ._types import SEEN_STATS_FIELDS, SeenStats

Key = Union[int, bytes, bytearray, memoryview, str]


def _key(key: Key) -> bytes:
    """A message id (int) as shmq_seen_id() keys it (8 bytes, little-endian); str as UTF-8."""
    if isinstance(key, int):
        return key.to_bytes(8, "little")
    if isinstance(key, str):
        return key.encode()
    return bytes(key)


class Seen:
    """A seen table (shmq_seen_t): at most max_entries keys, the oldest forgotten first.
    path None: in memory only; else the file is created (0600) or read back, and an added key
    is durable when add() returns (sync=False: survives a crash of the process, not a power
    loss; far cheaper). Keys: bytes (1..256), str, or a message id as an int. Any thread of
    this process; a context manager (close() at the end). Not across fork()."""

    def __init__(self, path: Optional[Union[str, "os.PathLike[str]"]] = None,
                 max_entries: int = 65536, sync: bool = True) -> None:
        sp = ffi.new("shmq_seen_t **")
        rc = lib.shmq_seen_open(ffi.NULL if path is None else os.fsencode(path), max_entries, sp)
        if rc:
            raise_error(rc, "seen_open %s" % ("(memory)" if path is None else os.fspath(path)))
        self._s: object = sp[0]
        if not sync:
            rc = lib.shmq_seen_set_sync(self._s, lib.SHMQ_SEEN_SYNC_WRITE)
            if rc:
                self.close()
                raise_error(rc, "seen_set_sync")

    def _handle(self) -> object:
        s = self._s
        if s is None:
            raise ValueError("shmq.Seen is closed")
        return s

    def check(self, key: Key) -> bool:
        """Was key added (and not yet forgotten)?"""
        k = _key(key)
        rc = lib.shmq_seen_check(self._handle(), k, len(k))
        if rc < 0:
            raise_error(rc, "seen_check")
        return bool(rc == 1)

    def add(self, key: Key) -> None:
        """Mark key processed (durable when it returns, with a file)."""
        k = _key(key)
        rc = lib.shmq_seen_add(self._handle(), k, len(k))
        if rc:
            raise_error(rc, "seen_add")

    def check_and_add(self, key: Key) -> bool:
        """Atomic test-and-set: True if key was there already (nothing changed), False if this
        call added it; of threads racing on one key exactly one gets False."""
        k = _key(key)
        rc = lib.shmq_seen_check_and_add(self._handle(), k, len(k))
        if rc < 0:
            raise_error(rc, "seen_check_and_add")
        return bool(rc == 1)

    def __contains__(self, key: Key) -> bool:
        return self.check(key)

    def stats(self) -> SeenStats:
        """What the table holds and did (a traversal: not for a hot path)."""
        st = ffi.new("shmq_seen_stats_t *")
        rc = lib.shmq_seen_stats(self._handle(), st)
        if rc:
            raise_error(rc, "seen_stats")
        return SeenStats(**{f: getattr(st, f) for f in SEEN_STATS_FIELDS})

    def close(self) -> None:
        """Free the table (every added key is in its file already). Idempotent."""
        s = self._s
        if s is None:
            return
        self._s = None
        rc = lib.shmq_seen_close(s)
        if rc:
            raise_error(rc, "seen_close")

    @property
    def closed(self) -> bool:
        return self._s is None

    def __enter__(self) -> "Seen":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
