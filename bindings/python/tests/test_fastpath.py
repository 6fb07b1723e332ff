"""The per-message calls are C (fast.c): publish(data), receive(), Message.ack() and
iteration run no Python code, and iteration fetches what is ready in batches (prefetch)."""
import errno
import sys

import pytest

import shmq


def _python_calls(fn):
    """The Python functions fn runs (sys.setprofile's 'call' events), fn itself excluded."""
    calls = []

    def prof(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return [c for c in calls if c != "loop"]


def test_one_message_at_a_time_runs_no_python(queue):
    c = queue.consumer()
    publish, receive = queue.publish, c.receive
    payload = b"x" * 64
    it = c.messages(0)

    def loop():
        for _ in range(10):
            publish(payload)
            msg = receive(0)
            len(msg)
            msg.ack()
        for _ in range(3):
            publish(payload)
        for msg in it:  # ends when a poll brings nothing
            msg.ack()

    assert _python_calls(loop) == []
    assert queue.stats().acked == 13
    publish(payload)
    assert next(it, None) is None  # ended for good, as a generator
    c.close()


def test_options_and_buffers_take_the_python_path(queue):
    with queue.consumer() as c:
        ids = [queue.publish(bytearray(b"ba")), queue.publish(memoryview(b"mv")),
               queue.publish(b"kw", delay=None), queue.publish(data=b"by name")]
        assert ids == sorted(ids)
        assert [bytes(m.data) for m in c.receive_many(10, 0)] == [b"ba", b"mv", b"kw", b"by name"]
        with pytest.raises(TypeError):
            queue.publish("text")
        with pytest.raises(TypeError):
            queue.publish(b"a", b"b")
        with pytest.raises(TypeError):
            c.receive(1, 2)
        with pytest.raises(TypeError):
            c.receive(wait=1)
        with pytest.raises(shmq.MessageTooLarge):
            queue.publish(b"x" * 257)
    queue.close()
    with pytest.raises(ValueError, match="closed"):
        queue.publish(b"after close")


def test_iteration_prefetches_what_is_ready(queue):
    for i in range(6):
        queue.publish(b"m%d" % i)
    with queue.consumer(prefetch=4) as c:
        it = c.messages(0)
        first = next(it)
        assert bytes(first.data) == b"m0" and c.pending == 3
        assert queue.stats().inflight == 4  # taken in one call, handed out one by one
        assert bytes(c.receive(0).data) == b"m1"  # receive() hands out the prefetched first
        rest = c.receive_many(10, 0)  # and so does receive_many(), never past them
        assert [bytes(m.data) for m in rest] == [b"m2", b"m3"] and c.pending == 0
        assert [bytes(m.data) for m in it] == [b"m4", b"m5"]  # then fetches again
        first.ack()
    # close gave back what was neither handed out nor acked: all but m0, at once
    with queue.consumer() as c:
        assert sorted(bytes(m.data) for m in c.receive_many(10, 0)) == [
            b"m1", b"m2", b"m3", b"m4", b"m5"]


def test_prefetched_messages_go_back_at_close(queue):
    for i in range(3):
        queue.publish(b"p%d" % i)
    c = queue.consumer(prefetch=8)
    assert bytes(next(iter(c)).data) == b"p0"
    assert c.pending == 2
    c.close()
    assert c.pending == 0
    with queue.consumer() as c2:
        got = c2.receive_many(10, 0)
        assert [bytes(m.data) for m in got] == [b"p0", b"p1", b"p2"]
        assert [m.redelivered for m in got] == [True, True, True]
    with pytest.raises(ValueError):
        queue.consumer(prefetch=0)


def test_ack_many_checks_its_items_and_reports_done(queue):
    queue.publish_many([b"a", b"b"])
    with queue.consumer() as c:
        msgs = c.receive_many(2, 0)
        with pytest.raises(TypeError):
            c.ack_many(msgs + ["not a message"])
        assert queue.stats().inflight == 2  # nothing was acked
        c.ack_many(tuple(msgs))
        with pytest.raises(shmq.StaleError) as e:
            c.ack_many(msgs)
        assert e.value.done == 0 and e.value.errno == errno.ESTALE
        c.ack_many([])


def test_a_message_outlives_its_consumer_object(queue):
    queue.publish(b"kept")
    c = queue.consumer()
    m = c.receive(0)
    del c  # the message holds its consumer
    assert bytes(m.data) == b"kept"
    m.ack()
    with pytest.raises(ValueError, match="released"):
        m.data
    assert m._settled and repr(m).endswith("settled>")


def test_a_second_thread_cannot_receive_on_or_close_a_busy_consumer(queue):
    import threading
    import time

    c = queue.consumer()
    got = []
    t = threading.Thread(target=lambda: got.append(c.receive(timeout=30)))
    t.start()
    deadline = time.monotonic() + 20
    while not c._busy and time.monotonic() < deadline:
        time.sleep(0.001)
    assert c._busy
    with pytest.raises(RuntimeError, match="one thread at a time"):
        c.receive(0)
    with pytest.raises(RuntimeError, match="one thread at a time"):
        list(c.messages(0))
    with pytest.raises(RuntimeError, match="one thread at a time"):
        c.close()
    queue.publish(b"wake")
    t.join(60)
    assert bytes(got[0].data) == b"wake"
    got[0].ack()
    assert not c._busy and c.receive(0) is None
    c.close()
