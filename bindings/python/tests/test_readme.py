"""The README's Python producer and consumer, run as written (the queue renamed) against the C
consumer `shmq sub` and the C producer `shmq pub`."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shmq
from test_interop import CLI

README = Path(__file__).resolve().parents[3] / "README.md"


def _examples():
    text = README.read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "README's Python section: expected a producer and a consumer"
    return blocks


def _run(code, name):
    env = dict(os.environ)
    # the shmq package this test imported (installed, or the source tree's)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(shmq.__file__))
    return subprocess.run(
        [sys.executable, "-c", code.replace('"orders"', '"%s"' % name)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout


@pytest.mark.skipif(not README.exists(), reason="no README.md above bindings/python")
@pytest.mark.skipif(CLI is None, reason="the shmq CLI is not found: set SHMQ_CLI (tests/run does)")
def test_readme_examples_with_the_c_tools(qname):
    producer, consumer = _examples()
    _run(producer, qname)
    _run(producer, qname)  # again: the queue exists, the dedup keys enqueue nothing new
    out = subprocess.run([CLI, "sub", qname, "--count", "3", "--timeout-ms", "20000"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.splitlines() == ["order 1", "order 2", "order 3"]
    subprocess.run([CLI, "pub", qname, "four", "five"], check=True, timeout=60)
    lines = _run(consumer, qname).splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["four", "five"]
    with shmq.Queue.open(qname) as q:
        st = q.stats()
    assert (st.published, st.acked, st.ready, st.dedup_hits) == (5, 5, 0, 3)
