"""Plain values the API returns: configuration, statistics, dead letters, replayed messages."""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Dict, Optional

from ._native import lib


class Durability(enum.IntEnum):
    """What a published message survives (README "Durability")."""

    NONE = lib.SHMQ_DURABILITY_NONE  # any process crash (the segment persists in /dev/shm)
    PROCESS = lib.SHMQ_DURABILITY_PROCESS  # + the loss of the segment (mmap'd log)
    SYNC = lib.SHMQ_DURABILITY_SYNC  # + power loss (the log is on stable storage)


@dataclass
class Config:
    """A queue's configuration (shmq_config_t); Queue.create() takes these names as keywords.
    Fields ending in _ms are milliseconds."""

    capacity: int
    max_msg_size: int
    max_procs: int
    heartbeat_timeout_ms: int
    ack_deadline_ms: int
    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int
    backoff_multiplier: float
    mode: int
    durability: Durability
    log_dir: Optional[str]
    wal_file_size: int
    log_retention_bytes: int
    dedup_window_count: int
    dedup_window_ms: int
    default_ttl_ms: int
    expire_policy: int
    max_groups: int
    max_header_bytes: int
    max_headers: int


CONFIG_FIELDS = tuple(f.name for f in fields(Config))


@dataclass
class Stats:
    """Queue.stats(): counters summed over every process that ever attached (shmq_stats_t),
    and the slot counts by state now. oldest_age_ms is -1 when no message is pending."""

    published: int
    delivered: int
    acked: int
    nacked: int
    redelivered: int
    dead_lettered: int
    reclaimed: int
    dedup_hits: int
    wal_bytes: int
    wal_flushes: int
    wal_files: int
    ready: int
    inflight: int
    delayed: int
    reserved: int
    dead: int
    free: int
    consumers: int
    procs: int
    oldest_age_ms: int
    wal_errors: int
    wal_last_error: int
    wal_healthy: int
    wal_flush_failed: int
    pinned: int
    recovered_holes: int
    recovered_bad_regions: int


STATS_FIELDS = tuple(f.name for f in fields(Stats))


@dataclass
class GroupInfo:
    """A consumer group as Queue.groups() lists it (shmq_group_info_t). overrun_bound: 0 for
    a group that keeps its messages (SHMQ_GROUP_BLOCK), else the most it holds
    (SHMQ_GROUP_OVERRUN, which dropped `overrun` so far). first_id: the queue's next id when
    it was made (it receives from about there); held: what it held at the last maintenance
    pass; deleting: a delete is releasing what it held."""

    index: int
    name: str
    overrun_bound: int
    deleting: bool
    first_id: int
    held: int
    overrun: int


@dataclass
class GroupStats:
    """Queue.group_stats(name): one consumer group's messages by state now
    (shmq_group_stats_t). held = ready + inflight + delayed + dead; lag: the ids published
    since the oldest message it has not finished (0 when it holds none); oldest_age_ms -1
    when none; newest_id: the queue's last id (lag's reference); delivered, acked, nacked:
    its consumers' counters summed (attached ones and those released since the group was
    created); consumers: how many are attached now."""

    index: int
    name: str
    ready: int
    inflight: int
    delayed: int
    dead: int
    held: int
    lag: int
    oldest_age_ms: int
    overrun: int
    newest_id: int
    first_id: int
    delivered: int
    acked: int
    nacked: int
    consumers: int


GROUP_STATS_FIELDS = tuple(f.name for f in fields(GroupStats))


class ConsumerState(enum.IntEnum):
    """A consumer's registry entry (ConsumerStats.state)."""

    CLAIMED = lib.SHMQ_PROC_CLAIMED  # attaching
    ACTIVE = lib.SHMQ_PROC_ACTIVE
    FENCED = lib.SHMQ_PROC_FENCED  # declared dead or hung: its acks fail (StaleError)


@dataclass
class ConsumerStats:
    """One attached consumer's counters since it attached (Queue.consumer_stats(),
    shmq_consumer_stats_t). reclaimed_from: its in-flight messages that maintenance took back
    (ack deadline passed, or fenced)."""

    index: int
    pid: int
    state: ConsumerState
    name: str
    delivered: int
    acked: int
    nacked: int
    redelivered: int
    dead_lettered: int
    reclaimed_from: int


CONSUMER_STATS_FIELDS = tuple(f.name for f in fields(ConsumerStats))


@dataclass(frozen=True)
class PeekedMessage:
    """A ready message as Queue.peek() copied it (not taken). attempt: deliveries so far (0:
    never delivered). headers: None unless peek(headers=True)."""

    id: int
    attempt: int
    data: bytes
    headers: Optional[Dict[str, bytes]] = None


@dataclass
class SeenStats:
    """Seen.stats() (shmq_seen_stats_t)."""

    entries: int
    max_entries: int
    added: int
    evicted: int
    loaded: int
    bad_bytes: int
    file_records: int
    compactions: int


SEEN_STATS_FIELDS = tuple(f.name for f in fields(SeenStats))


class DeadReason(enum.IntEnum):
    """Why a message is a dead letter."""

    MAX_ATTEMPTS = lib.SHMQ_DEAD_MAX_ATTEMPTS  # nacked or timed out max_attempts times
    CORRUPT = lib.SHMQ_DEAD_CORRUPT  # its slot held an impossible length


@dataclass(frozen=True)
class DeadLetter:
    """A message on the dead-letter ring (Queue.dead_letters()); data is a copy."""

    id: int
    attempt: int
    reason: DeadReason
    data: bytes


@dataclass(frozen=True)
class ReplayedMessage:
    """A message read back from the queue's log (Queue.replay()); data is a copy, unix_ms its
    publish time (the producer's CLOCK_REALTIME, ms since the epoch)."""

    id: int
    data: bytes
    unix_ms: int
