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
