"""Queue: create/open, configuration, publish (bytes, buffers, dedup, delay, full), errors,
stats, purge."""
import errno
import time

import pytest

import shmq
from shmq._native import ffi, lib


def test_create_open_and_config(qname):
    with shmq.Queue.create(qname, capacity=32, max_msg_size=100, durability="none",
                           max_attempts=3) as q:
        cfg = q.config
        assert (cfg.capacity, cfg.max_msg_size, cfg.max_attempts) == (32, 100, 3)
        assert cfg.durability is shmq.Durability.NONE
        with shmq.Queue.open(qname) as q2:
            assert q2.config == cfg
    assert q.closed


def test_unknown_config_is_a_type_error(qname):
    with pytest.raises(TypeError, match="capacityy"):
        shmq.Queue.create(qname, capacityy=3)
    with pytest.raises(ValueError, match="durability"):
        shmq.Queue.create(qname, durability="fast")


def test_errors_carry_errno_and_shmq_strerror(queue, qname):
    with pytest.raises(shmq.QueueExists) as e:
        shmq.Queue.create(qname)
    assert isinstance(e.value, shmq.ShmqError) and isinstance(e.value, OSError)
    assert e.value.errno == errno.EEXIST
    assert e.value.strerror == ffi.string(lib.shmq_strerror(-errno.EEXIST)).decode()
    assert "EEXIST" in str(e.value) and qname in str(e.value)
    with pytest.raises(shmq.QueueNotFound) as e:
        shmq.Queue.open(qname + "-none")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(shmq.ShmqError) as e:
        shmq.Queue.create("bad/name")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(shmq.MessageTooLarge):
        queue.publish(b"x" * 257)


def test_publish_takes_bytes_and_buffers_without_a_copy(queue):
    ids = [queue.publish(b"one"), queue.publish(bytearray(b"two")),
           queue.publish(memoryview(b"..three")[2:]), queue.publish(b"")]
    assert ids == sorted(ids) and len(set(ids)) == 4
    with queue.consumer() as c:
        got = [bytes(m.data) for m in _take(c, 4)]
    assert got == [b"one", b"two", b"three", b""]


def test_full_queue(qname):
    with shmq.Queue.create(qname, capacity=2, durability="none") as q:
        q.publish(b"a")
        q.publish(b"b")
        with pytest.raises(shmq.QueueFull) as e:
            q.publish(b"c")
        assert e.value.errno == errno.EAGAIN
        t0 = time.monotonic()
        with pytest.raises(shmq.QueueFull) as e:
            q.publish(b"c", timeout=0.05)
        assert e.value.errno == errno.ETIMEDOUT and time.monotonic() - t0 >= 0.04


def test_dedup_key_enqueues_once(qname):
    with shmq.Queue.create(qname, durability="none") as q:
        first = q.publish(b"pay 10", key=b"order-7")
        assert q.publish(b"pay 10 again", key="order-7") == first
        assert q.publish(b"other", key=memoryview(b"order-8")) != first
        assert q.stats().dedup_hits == 1
        with q.consumer() as c:
            assert [bytes(m.data) for m in _take(c, 2)] == [b"pay 10", b"other"]
            assert c.receive(0) is None
    with shmq.Queue.open(qname) as q2:
        with pytest.raises(ValueError):
            q2.publish(b"x", key=b"k", timeout=1)
        # through shmq_publish_ex, which refuses a key with a delay
        with pytest.raises(shmq.ShmqError) as e:
            q2.publish(b"x", key=b"k", delay=1)
        assert e.value.errno == errno.ENOTSUP


def test_headers_go_through_publish_ex(queue, qname):
    with pytest.raises(TypeError, match="header key"):
        queue.publish(b"x", headers={1: b"v"})
    assert queue.publish(b"no headers", headers={}) >= 1  # none: a plain publish
    with pytest.raises(shmq.ShmqError) as e:  # this queue has no room for headers
        queue.publish(b"x", headers={"trace-id": "abc"})
    assert e.value.errno == errno.ENOTSUP


def test_headers_round_trip(qname):
    with shmq.Queue.create(qname, durability="none", max_header_bytes=512) as q:
        assert q.config.max_header_bytes == 512
        q.publish(b"with", headers=[("trace-id", "abc"), (b"k2", b"v\x01\xff")])
        q.publish(b"without")
        with q.consumer() as c:
            m = c.receive(timeout=20)
            assert m.header_items() == [("trace-id", b"abc"), ("k2", b"v\x01\xff")]
            assert m.headers["trace-id"] == b"abc" and bytes(m.data) == b"with"
            m.ack()
            with pytest.raises(ValueError):
                m.headers
            m2 = c.receive(timeout=20)
            assert m2.headers == {}
            m2.ack()


def test_delayed_publish(qname):
    with shmq.Queue.create(qname, durability="none", heartbeat_timeout_ms=300) as q:
        mid = q.publish(b"later", delay=0.3)
        assert q.stats().delayed == 1
        with q.consumer() as c:
            assert c.receive(0) is None
            msg = c.receive(timeout=20)
            assert msg is not None and msg.id == mid
            msg.ack()


def test_stats_and_purge(queue):
    for i in range(5):
        queue.publish(b"%d" % i)
    st = queue.stats()
    assert isinstance(st, shmq.Stats)
    assert (st.published, st.ready, st.oldest_age_ms >= 0) == (5, 5, True)
    assert queue.purge() == 5
    assert queue.stats().ready == 0


def test_closed_queue_refuses(queue):
    c = queue.consumer()
    queue.close()
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        queue.publish(b"x")
    queue.close()  # idempotent


def _take(c, n):
    out = []
    while len(out) < n:
        m = c.receive(timeout=20)
        assert m is not None, "message %d of %d did not come" % (len(out) + 1, n)
        out.append(m)
        m.data  # keep a view, checked by the callers before the ack
    datas = [bytes(m.data) for m in out]
    for m in out:
        m.ack()
    return [_Copy(d) for d in datas]


class _Copy:
    def __init__(self, d):
        self.data = d
