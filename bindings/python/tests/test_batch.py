"""Batches: publish_many, receive_many, ack_many (shmq_publish_batch, _receive_batch,
_ack_batch), and receive()'s shared arrays: each message keeps its own delivery."""
import errno

import pytest

import shmq


def test_publish_many_receive_many_ack_many(queue):
    ids = queue.publish_many([b"a", bytearray(b"bb"), memoryview(b"ccc"), b""])
    assert len(ids) == 4 and ids == sorted(ids)
    with queue.consumer() as c:
        msgs = c.receive_many(10, timeout=20)
        assert [m.id for m in msgs] == ids
        assert [bytes(m.data) for m in msgs] == [b"a", b"bb", b"ccc", b""]
        assert [len(m) for m in msgs] == [1, 2, 3, 0] and all(msgs)
        views = [m.data for m in msgs]
        c.ack_many(msgs)
        for v in views:
            with pytest.raises(ValueError):
                v.tobytes()
        assert c.receive_many(10, timeout=0) == []
    st = queue.stats()
    assert (st.acked, st.ready, st.inflight) == (4, 0, 0)


def test_publish_many_stops_at_a_full_queue(qname):
    with shmq.Queue.create(qname, capacity=4, durability="none") as q:
        with pytest.raises(shmq.QueueFull) as e:
            q.publish_many([b"%d" % i for i in range(6)])
        assert len(e.value.ids) == 4 and e.value.errno == errno.EAGAIN
        with q.consumer() as c:
            assert [bytes(m.data) for m in c.receive_many(10, 0)] == [b"0", b"1", b"2", b"3"]


def test_ack_many_of_a_changed_list_acks_what_it_holds(queue):
    queue.publish_many([b"%d" % i for i in range(5)])
    with queue.consumer() as c:
        msgs = c.receive_many(5, timeout=20)
        assert len(msgs) == 5
        keep = msgs.pop(2)  # not acked by ack_many below
        msgs.reverse()
        c.ack_many(msgs)
        assert keep.data.tobytes() == b"2"  # still valid: not acked
        assert queue.stats().inflight == 1
        with pytest.raises(shmq.StaleError) as e:
            c.ack_many(msgs)  # again: every one is stale
        assert e.value.done == 0
        keep.ack()
    assert queue.stats().acked == 5


def test_messages_received_one_by_one_keep_their_own_delivery(qname):
    # receive() puts deliveries into one array per 64 messages: acking some, holding others,
    # and crossing into the next array must not mix them up.
    with shmq.Queue.create(qname, capacity=256, durability="none") as q, q.consumer() as c:
        q.publish_many([b"m%d" % i for i in range(150)])
        held = []
        for i in range(150):
            m = c.receive(timeout=20)
            assert bytes(m.data) == b"m%d" % i
            if i % 3 == 0:
                held.append(m)
            else:
                m.ack()
        for m in held:
            assert bytes(m.data) == b"m%d" % (m.id - 1)
            m.ack()
        assert q.stats().acked == 150
