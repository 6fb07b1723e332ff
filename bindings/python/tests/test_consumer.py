"""Consumer and Message: receive, zero-copy data released at ack/nack, nack and redelivery,
extend, iteration, the context managers, dead letters (list, redrive, purge), replay."""
import errno

import pytest

import shmq


def test_receive_returns_none_when_nothing_comes(queue):
    with queue.consumer() as c:
        assert c.receive(0) is None
        assert c.receive(0.01) is None


def test_data_is_a_zero_copy_view_released_at_ack(queue):
    queue.publish(b"hello")
    with queue.consumer() as c:
        m = c.receive(timeout=20)
        view = m.data
        assert isinstance(view, memoryview) and view.readonly and bytes(view) == b"hello"
        assert m.data is view and len(m) == 5 and bytes(m) == b"hello"
        assert (m.attempt, m.redelivered) == (1, False)
        m.ack()
        with pytest.raises(ValueError):
            view[0]
        with pytest.raises(ValueError, match="released"):
            m.data
        assert m.id >= 1  # the id stays readable
        with pytest.raises(shmq.StaleError) as e:
            m.ack()
        assert e.value.errno == errno.ESTALE


def test_nack_redelivers_and_releases(queue):
    queue.publish(b"retry me")
    with queue.consumer() as c:
        m = c.receive(timeout=20)
        view = m.data
        m.nack(delay=0)
        with pytest.raises(ValueError):
            bytes(view)
        m2 = c.receive(timeout=20)
        assert m2.id == m.id and m2.attempt == 2 and m2.redelivered
        m2.extend(60)
        m2.ack()


def test_message_context_manager_acks_or_nacks(queue):
    queue.publish(b"a")
    with queue.consumer() as c:
        with pytest.raises(RuntimeError):
            with c.receive(timeout=20) as m:
                raise RuntimeError("handler failed")
        with c.receive(timeout=20) as m2:  # nacked above: delivered again
            assert m2.id == m.id and m2.attempt == 2
        assert c.receive(0) is None
    assert queue.stats().acked == 1


def test_iteration_and_close_releases_views(queue):
    for i in range(3):
        queue.publish(b"m%d" % i)
    c = queue.consumer()
    got = []
    for m in c.messages(timeout=0):
        got.append(m)
        m.data
    assert [bytes(m.data) for m in got] == [b"m0", b"m1", b"m2"]
    views = [m.data for m in got]
    c.close()  # not acked: back to the queue, views released
    for v in views:
        with pytest.raises(ValueError):
            v.tobytes()
    with queue.consumer() as c2:
        n = 0
        for m in c2:
            m.ack()
            n += 1
            if n == 3:
                break
    assert queue.stats().acked == 3


def test_dead_letters_list_redrive_purge(qname):
    with shmq.Queue.create(qname, durability="none", max_attempts=1) as q, q.consumer() as c:
        a = q.publish(b"poison")
        b = q.publish(b"poison 2")
        for _ in range(2):
            c.receive(timeout=20).nack()
        dead = q.dead_letters()
        assert [(d.id, d.data, d.reason) for d in dead] == [
            (a, b"poison", shmq.DeadReason.MAX_ATTEMPTS),
            (b, b"poison 2", shmq.DeadReason.MAX_ATTEMPTS),
        ]
        assert q.redrive(a) == 1
        m = c.receive(timeout=20)
        assert m.id == a
        m.ack()
        assert q.purge_dead() == 1
        assert q.dead_letters() == []


def test_replay_reads_history(qname):
    with shmq.Queue.create(qname, durability="process") as q:
        ids = [q.publish(b"h%d" % i) for i in range(4)]
        with q.consumer() as c:
            for m in c.messages(0):
                m.ack()
        with q.replay() as r:
            hist = list(r)
        assert [(h.id, h.data) for h in hist] == [(i, b"h%d" % n) for n, i in enumerate(ids)]
        assert all(h.unix_ms > 0 for h in hist)
        assert [h.id for h in q.replay(from_id=ids[2])] == ids[2:]


def test_replay_needs_a_log(queue):
    with pytest.raises(shmq.ShmqError) as e:
        queue.replay()
    assert e.value.errno == errno.EOPNOTSUPP
