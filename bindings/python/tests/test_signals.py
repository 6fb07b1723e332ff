"""A signal during a blocking receive: its Python handler runs while receive waits (an
exception it raises comes out of receive at once), and a handler that returns lets the wait go
on for what is left of its timeout."""
import signal
import threading
import time

import pytest


class Interrupted(Exception):
    pass


@pytest.fixture
def alarm():
    old = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def test_handler_exception_leaves_a_blocking_receive(queue, alarm):
    def handler(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGALRM, handler)
    with queue.consumer() as c:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            c.receive(timeout=30)
        assert time.monotonic() - t0 < 20  # not the 30 s timeout


def test_receive_goes_on_after_a_handler_that_returns(queue, alarm):
    fired = []
    signal.signal(signal.SIGALRM, lambda s, f: fired.append(s))
    with queue.consumer() as c:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        # the publish comes from another thread once the handler ran
        t = threading.Thread(target=lambda: (_wait(fired), queue.publish(b"after")))
        t.start()
        m = c.receive(timeout=30)
        t.join(30)
        assert fired and m is not None and bytes(m.data) == b"after"
        m.ack()


def _wait(flag):
    deadline = time.monotonic() + 20
    while not flag and time.monotonic() < deadline:
        time.sleep(0.01)
