"""Python and C on one queue: a Python producer with the C consumer `shmq sub`, and the C
producer `shmq pub` with a Python consumer. The CLI is $SHMQ_CLI, else `shmq` on PATH."""
import json
import os
import shutil
import subprocess

import pytest

import shmq

CLI = os.environ.get("SHMQ_CLI") or shutil.which("shmq")
pytestmark = pytest.mark.skipif(
    CLI is None, reason="the shmq CLI is not found: set SHMQ_CLI (tests/run does)"
)


def test_python_producer_c_consumer(qname):
    payloads = [b"hello from python", "gr\u00fc\u00dfe".encode(), b"\x00\xffbinary"]
    with shmq.Queue.create(qname, durability="process") as q:
        ids = [q.publish(p) for p in payloads]
        out = subprocess.run(
            [CLI, "sub", qname, "--count", "3", "--timeout-ms", "20000", "--json"],
            capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["id"] for r in rows] == ids
        assert rows[0]["data"] == "hello from python"
        assert rows[1]["data"] == "gr\u00fc\u00dfe"
        assert "data_b64" in rows[2] and rows[2]["len"] == len(payloads[2])
        st = q.stats()
        assert (st.acked, st.ready) == (3, 0)


def test_c_producer_python_consumer(qname):
    with shmq.Queue.create(qname, durability="process") as q:
        subprocess.run([CLI, "pub", qname, "one", "two", "three"], check=True, timeout=60)
        with q.consumer() as c:
            got = []
            for _ in range(3):
                m = c.receive(timeout=20)
                assert m is not None
                got.append(bytes(m.data))
                m.ack()
        assert got == [b"one", b"two", b"three"]
