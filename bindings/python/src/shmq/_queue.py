"""Queue: create, open, publish, stats, dead letters, purge, replay, close."""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _fork
from ._consumer import Consumer, delay_ms, timeout_ms
from ._errors import ForkedHandleError, QueueFull, ShmqError, raise_error
from ._native import QueueBase, ffi, lib
from ._replay import Replay
from ._types import (
    CONFIG_FIELDS,
    CONSUMER_STATS_FIELDS,
    STATS_FIELDS,
    Config,
    ConsumerState,
    ConsumerStats,
    DeadLetter,
    DeadReason,
    Durability,
    GROUP_STATS_FIELDS,
    GroupInfo,
    GroupStats,
    PeekedMessage,
    Stats,
)

Buffer = Union[bytes, bytearray, memoryview]
_U64_P = ffi.typeof("uint64_t *")
_U64_ARRAY = ffi.typeof("uint64_t[]")
_SIZE_P = ffi.typeof("size_t *")
_DURABILITY_NAMES = {d.name.lower(): d for d in Durability}


def _config(kw: Dict[str, Any]) -> Any:
    cfg = ffi.new("shmq_config_t *")
    lib.shmq_config_init(cfg)
    keep = []
    for k, v in kw.items():
        if k not in CONFIG_FIELDS:
            raise TypeError("unknown queue configuration %r (known: %s)" % (k, ", ".join(CONFIG_FIELDS)))
        if k == "durability" and isinstance(v, str):
            if v.lower() not in _DURABILITY_NAMES:
                raise ValueError("durability %r: one of none, process, sync" % v)
            v = _DURABILITY_NAMES[v.lower()]
        if k == "log_dir":
            if v is None:
                v = ffi.NULL
            else:
                v = ffi.new("char[]", os.fsencode(v))
                keep.append(v)
        setattr(cfg, k, v)
    return cfg, keep


Headers = Union[Mapping[Union[str, bytes], Union[str, bytes]], Iterable[Tuple[Union[str, bytes], Union[str, bytes]]]]


def _bytes(x: Any, what: str) -> bytes:
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError("publish: a header %s must be str or bytes, not %s" % (what, type(x).__name__))


def _publish_ex(q: Any, data: Any, key: Any, delay: Optional[float], headers: Any, idp: Any) -> int:
    """One publish through shmq_publish_ex (headers, or a key with a delay)."""
    opts = ffi.new("shmq_pub_opts_t *")
    lib.shmq_pub_opts_init(opts)
    keep = []
    if delay is not None:
        opts.delay_ms = delay_ms(delay)
    if key is not None:
        kb = ffi.from_buffer(key.encode() if isinstance(key, str) else key)
        keep.append(kb)
        opts.dedup_key = kb
        opts.dedup_key_len = len(kb)
    if headers is not None:
        items = list(headers.items() if hasattr(headers, "items") else headers)
        arr = ffi.new("shmq_header_t[]", len(items))
        for i, (k, v) in enumerate(items):
            kc = ffi.new("char[]", _bytes(k, "key"))
            vc = ffi.new("char[]", _bytes(v, "value"))
            keep += (kc, vc)
            arr[i].key, arr[i].key_len = kc, len(kc) - 1
            arr[i].value, arr[i].value_len = vc, len(vc) - 1
        keep.append(arr)
        opts.headers = arr
        opts.n_headers = len(items)
    rc = lib.shmq_publish_ex(q, data, len(data), opts, idp)
    del keep
    return int(rc)


_CHANGEABLE = {
    "heartbeat_timeout_ms": lib.SHMQ_CONFIG_HEARTBEAT_TIMEOUT_MS,
    "ack_deadline_ms": lib.SHMQ_CONFIG_ACK_DEADLINE_MS,
    "max_attempts": lib.SHMQ_CONFIG_MAX_ATTEMPTS,
    "backoff_base_ms": lib.SHMQ_CONFIG_BACKOFF_BASE_MS,
    "backoff_cap_ms": lib.SHMQ_CONFIG_BACKOFF_CAP_MS,
    "backoff_multiplier": lib.SHMQ_CONFIG_BACKOFF_MULTIPLIER,
    "default_ttl_ms": lib.SHMQ_CONFIG_DEFAULT_TTL_MS,
    "expire_policy": lib.SHMQ_CONFIG_EXPIRE_POLICY,
    "log_retention_bytes": lib.SHMQ_CONFIG_LOG_RETENTION_BYTES,
}


def _of_group(group: Optional[str]) -> str:
    return "" if group is None else " of group %s" % group


def _decode_headers(block: Any, size: int) -> Dict[str, bytes]:
    """A copied header block (shmq_peek_headers) as a dict; {} for none."""
    if block == ffi.NULL or not size:
        return {}
    room = 8
    n = ffi.new(_SIZE_P)
    while True:
        out = ffi.new("shmq_header_t[]", room)
        rc = lib.shmq_headers_decode(block, size, out, room, n)
        if rc:
            raise_error(rc, "headers_decode")
        if n[0] <= room:
            return {
                ffi.unpack(h.key, h.key_len).decode("ascii"): ffi.unpack(h.value, h.value_len)
                for h in out[0 : n[0]]
            }
        room = n[0]


class Queue(QueueBase):  # type: ignore[misc]
    """An open queue. Safe to share between the threads of one process; not across fork()
    (ForkedHandleError: open it again in the child). Use Queue.create() or Queue.open(), both
    context managers (closed at the end of the with block)."""

    def __init__(self, name: str, handle: object) -> None:
        self.name = name
        self._q = handle
        self._gen = _fork.state[0]
        self._pid = _fork.state[1]
        self._consumers: Dict[int, Consumer] = {}
        self._idps: List[Any] = []
        # publish(data) is C (fast.c): it keeps the GIL when it cannot block (no log)
        self._hold_gil = self.config.durability == Durability.NONE
        self._set_handle(int(ffi.cast("uintptr_t", handle)), self._hold_gil)

    if TYPE_CHECKING:

        def publish(
            self,
            data: Buffer,
            *,
            key: Optional[Union[Buffer, str]] = None,
            delay: Optional[float] = None,
            timeout: Optional[float] = 0,
            headers: Optional[Headers] = None,
        ) -> int:
            """Publish data and return its id (_publish_slow says the rest). Without options
            it is C (fast.c); with any, _publish_slow."""

        def _set_handle(self, address: int, hold_gil: bool) -> None: ...

    @classmethod
    def create(cls, name: str, **config: Any) -> "Queue":
        """Create the queue name and open it. Keywords are shmq_config_t's fields (Config),
        the rest keep their defaults; durability takes Durability or "none"/"process"/"sync",
        log_dir a path. QueueExists if it exists."""
        cfg, keep = _config(config)
        qp = ffi.new("shmq_t **")
        rc = lib.shmq_create(name.encode(), cfg, qp)
        del keep
        if rc:
            raise_error(rc, "create %s" % name, detail=True)
        return cls(name, qp[0])

    @classmethod
    def open(cls, name: str) -> "Queue":
        """Open the existing queue name (QueueNotFound if there is none)."""
        qp = ffi.new("shmq_t **")
        rc = lib.shmq_open(name.encode(), qp)
        if rc:
            raise_error(rc, "open %s" % name, detail=True)
        return cls(name, qp[0])

    @staticmethod
    def unlink(name: str) -> None:
        """Delete the queue name for good: its segment and its log (QueueNotFound if neither
        existed). Processes that have it open keep their mappings."""
        rc = lib.shmq_unlink(name.encode())
        if rc:
            raise_error(rc, "unlink %s" % name)

    def _handle(self) -> object:
        if self._gen != _fork.state[0]:
            raise ForkedHandleError("shmq.Queue", self._pid, _fork.state[1])
        q = self._q
        if q is None:
            raise ValueError("shmq.Queue %s is closed" % self.name)
        return q

    def _publish_failed(self, rc: int) -> None:
        raise_error(rc, "publish to %s" % self.name)

    def _publish_slow(
        self,
        data: Buffer,
        *,
        key: Optional[Union[Buffer, str]] = None,
        delay: Optional[float] = None,
        timeout: Optional[float] = 0,
        headers: Optional[Headers] = None,
    ) -> int:
        """Publish data (bytes, or any contiguous buffer: passed without a copy) and return
        its id. key: a dedup key (1..128 bytes): a second publish with the same key within the
        queue's dedup window enqueues nothing and returns the first one's id. delay: seconds
        until it becomes ready. timeout: seconds to wait for a free slot when the queue is full
        (None: forever; 0, the default: QueueFull at once). headers: a mapping (or pairs) of
        str/bytes keys to str/bytes values, carried with the message (shmq_publish_ex; a
        queue without room for headers refuses them: ShmqError ENOTSUP). timeout excludes the
        others; key with delay is ENOTSUP (shmq_publish_ex)."""
        if self._gen != _fork.state[0]:
            raise ForkedHandleError("shmq.Queue", self._pid, _fork.state[1])
        q = self._q
        if q is None:
            raise ValueError("shmq.Queue %s is closed" % self.name)
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        pool = self._idps  # uint64_t out-parameters: list.pop/append are atomic (threads)
        idp = pool.pop() if pool else ffi.new(_U64_P)
        if key is None and delay is None and headers is None and timeout == 0:
            rc = lib.shmq_publish(q, data, len(data), idp)
        elif headers is not None or (key is not None and delay is not None):
            if timeout != 0:
                raise ValueError("publish: timeout excludes headers, key and delay")
            rc = _publish_ex(q, data, key, delay, headers, idp)
        elif key is not None:
            if delay is not None or timeout != 0:
                raise ValueError("publish: a dedup key excludes delay and timeout")
            if isinstance(key, str):
                kb: Any = key.encode()
            elif type(key) is bytes:
                kb = key
            else:
                kb = ffi.from_buffer(key)
            rc = lib.shmq_publish_dedup(q, data, len(data), kb, len(kb), idp)
        elif delay is not None:
            if timeout != 0:
                raise ValueError("publish: delay excludes timeout")
            rc = lib.shmq_publish_delayed(q, data, len(data), delay_ms(delay), idp)
        else:
            rc = lib.shmq_publish_timed(q, data, len(data), idp, timeout_ms(timeout))
        if rc:
            if rc == -errno.ETIMEDOUT:  # publish_timed: still full after the timeout
                raise QueueFull(errno.ETIMEDOUT, "publish to %s" % self.name)
            raise_error(rc, "publish to %s" % self.name, detail=headers is not None)
        mid = int(idp[0])
        pool.append(idp)
        return mid

    def publish_many(self, messages: Iterable[Buffer]) -> List[int]:
        """Publish messages in order through shmq_publish_batch (64 a call) and return their
        ids: as many publish() calls, for less (one C call per 64, one wake-up of sleeping
        consumers). The payloads are copied once, into one buffer. When the queue fills up
        (or another error stops it) the first ones are published and the error is raised with
        .ids, the ids of those: publish the rest again."""
        if self._gen != _fork.state[0]:
            raise ForkedHandleError("shmq.Queue", self._pid, _fork.state[1])
        q = self._q
        if q is None:
            raise ValueError("shmq.Queue %s is closed" % self.name)
        msgs = messages if type(messages) is list else list(messages)
        n = len(msgs)
        buf = b"".join(msgs)
        lens = [len(m) for m in msgs]
        if sum(lens) != len(buf):  # buffers whose len() is not their size in bytes
            lens = [memoryview(m).nbytes for m in msgs]
        ids = ffi.new(_U64_ARRAY, n)
        done = ffi.new(_SIZE_P)
        rc = lib.pyshmq_publish_joined(q, buf, lens, n, ids, done)
        out: List[int] = ffi.unpack(ids, done[0])
        if rc:
            try:
                raise_error(rc, "publish_many to %s: %d of %d published" % (self.name, done[0], n))
            except ShmqError as e:
                e.ids = out  # type: ignore[attr-defined]
                raise
        return out

    def consumer(
        self, name: str = "python", group: Optional[str] = None, prefetch: int = 16
    ) -> Consumer:
        """Attach a consumer (a context manager; close() detaches it); with group, a member of
        that consumer group (shmq_consumer_open_group: README "Fan-out"). prefetch: how many
        ready messages iteration takes in one call (1: one at a time; Consumer says more)."""
        return Consumer(self, name, group, prefetch)

    def create_group(self, name: str, overrun_bound: int = 0) -> None:
        """Create consumer group name: it receives every message published from now on, its
        consumers (consumer(group=name)) competing for them. overrun_bound 0: a slow group
        keeps its messages (publishers see a full queue); else it keeps at most that many,
        losing its oldest ready ones (shmq_group_create, SHMQ_GROUP_BLOCK / _OVERRUN)."""
        policy = lib.SHMQ_GROUP_OVERRUN if overrun_bound else lib.SHMQ_GROUP_BLOCK
        rc = lib.shmq_group_create(self._handle(), name.encode(), policy, overrun_bound)
        if rc:
            raise_error(rc, "group_create %s" % name)

    def delete_group(self, name: str) -> None:
        """Delete consumer group name; what it held is released."""
        rc = lib.shmq_group_delete(self._handle(), name.encode())
        if rc:
            raise_error(rc, "group_delete %s" % name)

    def groups(self) -> List[GroupInfo]:
        """The queue's consumer groups, by index ("default" first) (shmq_group_list)."""
        q = self._handle()
        room = 16
        n = ffi.new(_SIZE_P)
        while True:
            out = ffi.new("shmq_group_info_t[]", room)
            rc = lib.shmq_group_list(q, out, room, n)
            if rc:
                raise_error(rc, "group_list")
            if n[0] < room:
                break
            room *= 4
        return [
            GroupInfo(
                g.index,
                ffi.string(g.name).decode("utf-8", "replace"),
                g.bound if g.policy == lib.SHMQ_GROUP_OVERRUN else 0,
                bool(g.deleting),
                g.first_id,
                g.held,
                g.overrun,
            )
            for g in out[0 : n[0]]
        ]

    def group_stats(self, group: Optional[str] = None) -> GroupStats:
        """Consumer group group's messages by state and its lag (shmq_group_stats; None:
        "default"). A scan of its cells: not for a hot path. QueueNotFound for no such
        group."""
        st = ffi.new("shmq_group_stats_t *")
        rc = lib.shmq_group_stats(
            self._handle(), ffi.NULL if group is None else group.encode(), st
        )
        if rc:
            raise_error(rc, "group_stats%s" % _of_group(group))
        v = {f: getattr(st, f) for f in GROUP_STATS_FIELDS if f != "name"}
        return GroupStats(name=ffi.string(st.name).decode("utf-8", "replace"), **v)

    @property
    def config(self) -> Config:
        """The queue's configuration as stored in its segment."""
        cfg = ffi.new("shmq_config_t *")
        lib.shmq_config_init(cfg)
        rc = lib.shmq_get_config(self._handle(), cfg)
        if rc:
            raise_error(rc, "get_config")
        values = {f: getattr(cfg, f) for f in CONFIG_FIELDS}
        values["durability"] = Durability(values["durability"])
        ld = values["log_dir"]
        values["log_dir"] = None if ld == ffi.NULL else os.fsdecode(ffi.string(ld))
        return Config(**values)

    def set_config(self, **changes: Any) -> None:
        """Change settings of the running queue, for every process at once (shmq_set_config;
        README "Changing settings"): keywords among heartbeat_timeout_ms, ack_deadline_ms,
        max_attempts, backoff_base_ms, backoff_cap_ms, backoff_multiplier, default_ttl_ms,
        expire_policy, log_retention_bytes.
        Another Config field is a ValueError (it shapes the segment: fixed at create); a value
        out of range is ShmqError EINVAL with .detail naming the field, nothing changed."""
        bad = [k for k in changes if k not in _CHANGEABLE]
        if bad or not changes:
            raise ValueError(
                "set_config: %s (changeable: %s)"
                % ("fixed at create: " + ", ".join(bad) if bad else "nothing to change",
                   ", ".join(_CHANGEABLE))
            )
        cfg = ffi.new("shmq_config_t *")
        lib.shmq_config_init(cfg)
        mask = 0
        for k, v in changes.items():
            setattr(cfg, k, v)
            mask |= _CHANGEABLE[k]
        rc = lib.shmq_set_config(self._handle(), cfg, mask)
        if rc:
            raise_error(rc, "set_config %s" % ", ".join(changes), detail=True)

    def consumer_stats(self) -> List[ConsumerStats]:
        """Each attached consumer's counters since it attached (shmq_consumer_stats), by
        registry index: who delivered, acked, nacked what. Closed consumers leave the list (the
        queue's stats() keep their counts)."""
        q = self._handle()
        room = 16
        n = ffi.new(_SIZE_P)
        while True:
            out = ffi.new("shmq_consumer_stats_t[]", room)
            rc = lib.shmq_consumer_stats(q, out, room, n)
            if rc:
                raise_error(rc, "consumer_stats")
            if n[0] < room:
                break
            room *= 4  # as many as room: there may be more
        res = []
        for s in out[0 : n[0]]:
            v = {f: getattr(s, f) for f in CONSUMER_STATS_FIELDS}
            v["name"] = ffi.string(s.name, lib.SHMQ_CONSUMER_NAME_MAX).decode("utf-8", "replace")
            v["state"] = ConsumerState(s.state)
            res.append(ConsumerStats(**v))
        return res

    def peek(
        self, max: int = 16, headers: bool = False, group: Optional[str] = None
    ) -> List[PeekedMessage]:
        """Copies of up to max ready messages, lowest id first, without taking them: no
        attempt spent, nobody delayed (shmq_peek). In-flight, delayed, dead and expired
        messages are not shown; the set is no snapshot (README "Peek"). headers=True also
        copies each one's headers (shmq_peek_headers). A scan of the slots: not for a hot
        path. With group, the messages ready for that consumer group (shmq_peek_group),
        attempt counting its deliveries."""
        if max < 1:
            raise ValueError("peek: max must be at least 1")
        q = self._handle()
        cfg = self.config
        per = cfg.max_msg_size + (cfg.max_header_bytes if headers else 0)
        out = ffi.new("shmq_peek_msg_t[]", max)
        hdrs = ffi.new("shmq_peek_headers_t[]", max) if headers else ffi.NULL
        buf = ffi.new("char[]", max * per or 1)
        n = ffi.new(_SIZE_P)
        if group is None:
            rc = lib.shmq_peek_headers(q, out, hdrs, max, buf, max * per, n)
        else:
            rc = lib.shmq_peek_group(q, group.encode(), out, hdrs, max, buf, max * per, n)
        if rc:
            raise_error(rc, "peek%s" % _of_group(group))
        res = []
        for i in range(n[0]):
            m = out[i]
            h: Optional[Dict[str, bytes]] = None
            if headers:
                h = _decode_headers(hdrs[i].block, hdrs[i].len)
            res.append(PeekedMessage(m.id, m.attempt, ffi.unpack(ffi.cast("char *", m.data), m.copied), h))
        return res

    def stats(self) -> Stats:
        """Counters and slot counts (a scan of the slots: not for a hot path)."""
        st = ffi.new("shmq_stats_t *")
        rc = lib.shmq_stats(self._handle(), st)
        if rc:
            raise_error(rc, "stats")
        return Stats(**{f: getattr(st, f) for f in STATS_FIELDS})

    def dead_letters(self, group: Optional[str] = None) -> List[DeadLetter]:
        """The dead letters, oldest id first (copies); with group, that consumer group's own
        (shmq_dlq_list_group; None: "default"). QueueNotFound for no such group."""
        q = self._handle()
        g = None if group is None else group.encode()
        room = 64
        while True:
            out = ffi.new("shmq_dead_letter_t[]", room)
            n = ffi.new("size_t *")
            if g is None:
                rc = lib.shmq_dlq_list(q, out, room, n)
            else:
                rc = lib.shmq_dlq_list_group(q, g, out, room, n)
            if rc:
                raise_error(rc, "dlq_list%s" % _of_group(group))
            if n[0] < room:
                return [
                    DeadLetter(
                        d.id, d.attempt, DeadReason(d.reason), bytes(ffi.buffer(d.data, d.len))
                    )
                    for d in out[0 : n[0]]
                ]
            room *= 4

    def redrive(self, id: int = 0, group: Optional[str] = None) -> int:
        """Move dead letter id (0: all) back to the ready ring, attempt 0; how many moved.
        With group, that group's dead letter, ready again for that group alone."""
        moved = ffi.new("uint32_t *")
        if group is None:
            rc = lib.shmq_dlq_redrive(self._handle(), id, moved)
        else:
            rc = lib.shmq_dlq_redrive_group(self._handle(), group.encode(), id, moved)
        if rc:
            raise_error(rc, "dlq_redrive%s" % _of_group(group))
        return int(moved[0])

    def purge_dead(self, id: int = 0, group: Optional[str] = None) -> int:
        """Drop dead letter id (0: all); how many were dropped. With group, from that group
        only (the slot is freed once no group holds the message)."""
        purged = ffi.new("uint32_t *")
        if group is None:
            rc = lib.shmq_dlq_purge(self._handle(), id, purged)
        else:
            rc = lib.shmq_dlq_purge_group(self._handle(), group.encode(), id, purged)
        if rc:
            raise_error(rc, "dlq_purge%s" % _of_group(group))
        return int(purged[0])

    def purge(self, delayed: bool = False, group: Optional[str] = None) -> int:
        """Drop every ready message (delayed=True: the delayed ones too); how many. With group,
        from that consumer group only, as if it had acked them (shmq_purge_group; the other
        groups keep theirs)."""
        count = ffi.new("uint32_t *")
        flags = lib.SHMQ_PURGE_DELAYED if delayed else 0
        if group is None:
            rc = lib.shmq_purge(self._handle(), flags, count)
        else:
            rc = lib.shmq_purge_group(self._handle(), group.encode(), flags, count)
        if rc:
            raise_error(rc, "purge%s" % _of_group(group))
        return int(count[0])

    def replay(
        self, from_id: int = 0, since_unix_ms: int = 0, follow: Optional[float] = None
    ) -> Replay:
        """Read the queue's history back from its log (durability PROCESS or SYNC): the
        messages with id >= from_id, or with from_id 0 those published at or after
        since_unix_ms (0: all the log keeps). An iterator of ReplayedMessage and a context
        manager; it ends at the end of the log, or with follow=SECONDS polls for more every
        SECONDS forever (like tail -f)."""
        return Replay(self, from_id, since_unix_ms, follow)

    def close(self) -> None:
        """Close the queue's consumers and the queue. Idempotent. In a forked child it only
        forgets the handle (the parent's)."""
        q = self._q
        if q is None:
            return
        for c in list(self._consumers.values()):
            c.close()
        self._q = None
        self._set_handle(0, False)
        if self._gen != _fork.state[0]:
            return
        rc = lib.shmq_close(q)
        if rc:
            raise_error(rc, "close %s" % self.name)

    @property
    def closed(self) -> bool:
        return self._q is None

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (ShmqError, AttributeError):
            pass

    def __repr__(self) -> str:
        return "<shmq.Queue %r%s>" % (self.name, " closed" if self._q is None else "")
