"""Blocking calls release the GIL: while one thread sleeps in receive(), another thread runs
Python code (here: it watches the sleeper in the kernel and then publishes what wakes it). If
receive held the GIL, the main thread could not run until the receive timed out (30 s) and the
message would not be received."""
import threading
import time

import pytest

import shmq

FUTEX = 202  # x86_64; elsewhere the state check below is all


def _in_kernel_wait(tid):
    try:
        with open("/proc/self/task/%d/stat" % tid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state == "S"


RECEIVES = {
    "receive": lambda c: c.receive(timeout=30),
    "receive_many": lambda c: (c.receive_many(8, timeout=30) or [None])[0],
    "iteration": lambda c: next(iter(c.messages(30)), None),
}


@pytest.mark.parametrize("how", sorted(RECEIVES))
def test_receive_releases_the_gil(queue, how):
    got = []
    started = threading.Event()
    ids = {}

    def consumer():
        with queue.consumer() as c:
            ids["tid"] = threading.get_native_id()
            started.set()
            m = RECEIVES[how](c)
            got.append(None if m is None else bytes(m.data))
            if m is not None:
                m.ack()

    t = threading.Thread(target=consumer)
    t.start()
    assert started.wait(20)
    # Wait (up to 20 s) until the consumer has been asleep for 50 samples in a row while this
    # thread runs Python between them: it is in receive's futex sleep, not waiting for the GIL
    # (this thread releases it at every time.sleep).
    asleep, deadline = 0, time.monotonic() + 20
    while asleep < 50 and time.monotonic() < deadline:
        asleep = asleep + 1 if _in_kernel_wait(ids["tid"]) else 0
        time.sleep(0.001)
    assert asleep >= 50, "the consumer thread never slept in receive"
    queue.publish(b"wake up")
    t.join(60)
    assert got == [b"wake up"]
