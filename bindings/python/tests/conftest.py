"""pytest setup: import the installed shmq package, or else build the native module in the
source tree (against the libshmq pkg-config finds) and import it from src/. Every test runs
with SHMQ_STATE_DIR in a temporary directory, so queues' logs never touch the user's."""
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent


def _import_shmq():
    try:
        import shmq  # noqa: F401  (installed: pip install ./bindings/python)

        return
    except ImportError:
        pass
    # In-tree: compile shmq._native into build/inplace and put it next to the sources.
    sys.path.insert(0, str(HERE))
    import shmq_build

    out = shmq_build.ffibuilder.compile(tmpdir=str(HERE / "build" / "inplace"))
    shutil.copy2(out, HERE / "src" / "shmq" / Path(out).name)
    sys.path.insert(0, str(HERE / "src"))
    import shmq  # noqa: F401,F811


_import_shmq()
import shmq  # noqa: E402

_state = tempfile.mkdtemp(prefix="shmq-pytest.")
os.environ["SHMQ_STATE_DIR"] = _state
_names = itertools.count()


@pytest.fixture
def qname():
    """A fresh queue name, deleted (segment and log) after the test."""
    name = "py-%d-%d" % (os.getpid(), next(_names))
    yield name
    try:
        shmq.Queue.unlink(name)
    except shmq.QueueNotFound:
        pass


@pytest.fixture
def queue(qname):
    """A small queue (durability none), closed after the test."""
    with shmq.Queue.create(qname, capacity=16, max_msg_size=256, durability="none") as q:
        yield q


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_state, ignore_errors=True)


def pytest_report_header(config):
    return "shmq %s from %s" % (shmq.__version__, os.path.dirname(shmq.__file__))
