"""Consumer groups (fan-out): each group gets every message published after it was made."""
import pytest

import shmq


def test_two_groups_each_get_every_message(qname):
    with shmq.Queue.create(qname, durability="none", max_groups=3) as q:
        q.create_group("audit")
        with pytest.raises(shmq.QueueExists):
            q.create_group("audit")
        ids = q.publish_many([b"a", b"b", b"c"])
        with q.consumer("w") as c, q.consumer("a", group="audit") as a:
            for cons in (c, a):
                msgs = cons.receive_many(10, timeout=20)
                while len(msgs) < 3:
                    msgs += cons.receive_many(10, timeout=20)
                assert [m.id for m in msgs] == ids
                cons.ack_many(list(msgs))
        with pytest.raises(shmq.QueueNotFound):
            q.consumer(group="none")
        q.delete_group("audit")


def test_each_group_has_its_own_dead_letters(qname):
    with shmq.Queue.create(qname, durability="none", max_groups=3, max_attempts=1) as q:
        q.create_group("audit")
        mid = q.publish(b"poison")
        with q.consumer("a", group="audit") as a:
            a.receive(timeout=20).nack()
            dead = q.dead_letters(group="audit")
            assert [(d.id, d.data, d.reason) for d in dead] == [
                (mid, b"poison", shmq.DeadReason.MAX_ATTEMPTS)]
            assert q.dead_letters() == []  # "default" still has it ready
            assert q.dead_letters(group="default") == []
            assert q.redrive(group="audit") == 1  # ready again for audit alone
            m = a.receive(timeout=20)
            assert (m.id, m.attempt) == (mid, 1)
            m.nack()
            assert q.purge_dead(mid, group="audit") == 1
            assert q.dead_letters(group="audit") == []
        with q.consumer("w") as c:  # the default group's copy was never touched
            m = c.receive(timeout=20)
            assert (m.id, m.attempt) == (mid, 1)
            m.ack()
        for call in (lambda: q.dead_letters(group="none"), lambda: q.redrive(group="none"),
                     lambda: q.purge_dead(group="none")):
            with pytest.raises(shmq.QueueNotFound) as e:
                call()
            assert "group none" in str(e.value)


def test_groups_lists_each_group(qname):
    with shmq.Queue.create(qname, durability="none", max_groups=3) as q:
        q.publish(b"before")
        q.create_group("lossy", overrun_bound=5)
        g = {x.name: x for x in q.groups()}
        assert sorted(g) == ["default", "lossy"]
        assert (g["default"].index, g["default"].overrun_bound) == (0, 0)
        assert g["lossy"].overrun_bound == 5 and not g["lossy"].deleting
        assert g["lossy"].first_id > g["default"].first_id
        q.delete_group("lossy")
        assert [x.name for x in q.groups() if not x.deleting] == ["default"]


def test_peek_and_purge_one_group(qname):
    with shmq.Queue.create(qname, durability="none", max_groups=3) as q:
        q.create_group("audit")
        ids = q.publish_many([b"a", b"b", b"c"])
        with q.consumer("a", group="audit") as a:
            a.receive(timeout=20).ack()
            assert [p.id for p in q.peek(group="audit")] == ids[1:]
            assert [p.id for p in q.peek()] == ids  # "default" has all three ready
            assert [p.id for p in q.peek(group="default")] == ids
            assert q.purge(group="audit") == 2
            assert q.peek(group="audit") == [] and a.receive(0) is None
        assert [p.data for p in q.peek()] == [b"a", b"b", b"c"]  # the other group keeps them
        with pytest.raises(shmq.QueueNotFound):
            q.peek(group="none")
        with pytest.raises(shmq.QueueNotFound):
            q.purge(group="none")


def test_group_stats_count_one_groups_messages(qname):
    with shmq.Queue.create(qname, durability="none", max_groups=3) as q:
        q.create_group("audit")
        ids = q.publish_many([b"a", b"b", b"c"])
        with q.consumer("a", group="audit") as a:
            m = a.receive(timeout=20)
            st = q.group_stats("audit")
            assert (st.name, st.ready, st.inflight, st.held) == ("audit", 2, 1, 3)
            assert st.lag == 3 and st.newest_id == ids[-1] and st.oldest_age_ms >= 0
            m.ack()
            a.ack_many(a.receive_many(10, timeout=20))
            st = q.group_stats("audit")
            assert (st.ready, st.inflight, st.held, st.lag, st.oldest_age_ms) == (0, 0, 0, 0, -1)
            assert (st.delivered, st.acked, st.nacked, st.consumers) == (3, 3, 0, 1)
        d = q.group_stats()
        assert (d.name, d.index, d.ready) == ("default", 0, 3)
        with pytest.raises(shmq.QueueNotFound):
            q.group_stats("none")
