"""A handle must not cross fork(): an inherited Queue or Consumer is refused in the child
(ForkedHandleError) rather than acting under the parent's registry entry; a child that opens
the queue itself works (multiprocessing with the fork start method)."""
import errno
import multiprocessing
import os

import pytest

import shmq


def _in_child(fn):
    """Run fn() in a forked child; return its exit code (0: fn returned True)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if fn() else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_inherited_handles_are_refused_in_the_child(queue):
    c = queue.consumer()
    queue.publish(b"parent's")

    def child():
        for call in (lambda: queue.publish(b"x"), lambda: c.receive(0), queue.stats):
            try:
                call()
                return False
            except shmq.ForkedHandleError as e:
                if e.errno != errno.ECHILD or "fork" not in str(e):
                    return False
        # closing in the child only forgets the handle: the parent's stays usable
        c.close()
        queue.close()
        return True

    assert _in_child(child) == 0
    m = c.receive(timeout=20)
    assert bytes(m.data) == b"parent's"
    m.ack()
    assert queue.stats().procs == 2  # the parent's queue and consumer entries, nothing more
    c.close()


def _child_publishes(name, n):
    with shmq.Queue.open(name) as q:
        for i in range(n):
            q.publish(b"child %d" % i, timeout=20)


def test_multiprocessing_child_opens_its_own(queue):
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_child_publishes, args=(queue.name, 5))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    with queue.consumer() as c:
        got = sorted(bytes(m.data) for m in _drain(c, 5))
    assert got == [b"child %d" % i for i in range(5)]


def _drain(c, n):
    out = []
    for _ in range(n):
        m = c.receive(timeout=20)
        assert m is not None
        out.append(bytes(m.data))
        m.ack()
    return [type("M", (), {"data": d})() for d in out]
