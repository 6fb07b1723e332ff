"""The calls wrapped after the first round: per-consumer counters, peek, set_config,
shmq_last_error_detail() in exceptions, and the seen helper."""
import errno

import pytest

import shmq


def test_consumer_stats_count_each_consumers_work(queue):
    for i in range(5):
        queue.publish(b"m%d" % i)
    with queue.consumer("one") as a, queue.consumer("two") as b:
        for _ in range(3):
            a.receive(0).ack()
        m = b.receive(0)
        m.nack(0.001)
        st = {s.name: s for s in queue.consumer_stats()}
        assert set(st) == {"one", "two"}
        assert (st["one"].delivered, st["one"].acked, st["one"].nacked) == (3, 3, 0)
        assert (st["two"].delivered, st["two"].acked, st["two"].nacked) == (1, 0, 1)
        assert st["one"].state is shmq.ConsumerState.ACTIVE
        assert st["one"].index != st["two"].index
    assert queue.consumer_stats() == []


def test_peek_copies_without_taking(qname):
    with shmq.Queue.create(qname, capacity=16, max_msg_size=64, durability="none",
                           max_header_bytes=256, max_headers=4) as q:
        q.publish(b"first", headers={"k": "v1"})
        q.publish(b"second")
        q.publish(b"later", delay=60)
        got = q.peek()
        assert [(p.data, p.attempt, p.headers) for p in got] == [
            (b"first", 0, None), (b"second", 0, None)]
        assert got[0].id < got[1].id
        assert [p.headers for p in q.peek(headers=True)] == [{"k": b"v1"}, {}]
        assert [p.data for p in q.peek(max=1)] == [b"first"]
        with q.consumer() as c:  # nothing was taken: both still come, first attempt
            m = c.receive(0)
            assert (bytes(m.data), m.attempt) == (b"first", 1)
            assert [p.data for p in q.peek()] == [b"second"]  # in flight: not shown
            m.ack()
        with pytest.raises(ValueError):
            q.peek(max=0)


def test_set_config_changes_a_running_queue(queue, qname):
    queue.set_config(max_attempts=7, ack_deadline_ms=1234)
    with shmq.Queue.open(qname) as q2:
        assert (q2.config.max_attempts, q2.config.ack_deadline_ms) == (7, 1234)
    with pytest.raises(ValueError, match="capacity"):
        queue.set_config(capacity=99)
    with pytest.raises(ValueError):
        queue.set_config()
    with pytest.raises(shmq.ShmqError) as e:
        queue.set_config(backoff_multiplier=0.5)
    assert e.value.errno == errno.EINVAL
    assert "backoff_multiplier" in e.value.detail and e.value.detail in str(e.value)
    assert queue.config.max_attempts == 7


def test_errors_carry_the_last_error_detail(qname):
    with pytest.raises(shmq.ShmqError) as e:
        shmq.Queue.create(qname, capacity=0)
    assert e.value.errno == errno.EINVAL
    assert "capacity" in e.value.detail
    assert str(e.value).endswith(e.value.detail)
    with shmq.Queue.create(qname, capacity=4, durability="none") as q:
        q.publish(b"a")
        with q.consumer() as c:
            m = c.receive(0)
            m.ack()
            with pytest.raises(shmq.StaleError) as e:
                m.ack()  # not a call that sets the detail: the create's is not attached
            assert e.value.detail == ""


def test_seen_in_memory(queue):
    with shmq.Seen(max_entries=2) as s:
        assert not s.check(b"a") and b"a" not in s
        s.add(b"a")
        assert s.check(b"a") and "a" in s
        assert s.check_and_add(b"b") is False
        assert s.check_and_add(b"b") is True
        s.add(b"c")  # evicts the oldest
        assert not s.check(b"a")
        st = s.stats()
        assert (st.entries, st.max_entries, st.added, st.evicted) == (2, 2, 3, 1)
        with pytest.raises(shmq.MessageTooLarge):
            s.add(b"x" * 257)
    assert s.closed
    with pytest.raises(ValueError):
        s.check(b"a")


def test_seen_file_survives_reopen_and_keys_message_ids(queue, tmp_path):
    path = tmp_path / "t.seen"
    mid = queue.publish(b"x")
    with shmq.Seen(path, 100) as s:
        assert not s.check(mid)
        s.add(mid)
        assert s.check(mid)
        with pytest.raises(shmq.ShmqError) as e:
            shmq.Seen(path, 100)
        assert e.value.errno == errno.EBUSY
    with shmq.Seen(path, 100, sync=False) as s:
        assert s.check(mid) and s.stats().loaded == 1
        assert s.check(mid.to_bytes(8, "little"))  # shmq_seen_id()'s key


def test_set_config_expire_policy_and_retention(queue, qname):
    queue.set_config(log_retention_bytes=1 << 30, expire_policy=queue.config.expire_policy)
    assert queue.config.log_retention_bytes == 1 << 30
