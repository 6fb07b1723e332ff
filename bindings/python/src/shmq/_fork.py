"""Fork detection. A handle records the fork generation of the process that opened it; a child
made by fork() (os.fork, multiprocessing's fork start method, subprocess never) starts a new
generation, so a handle inherited across the fork is refused (ForkedHandleError) instead of
acting under its parent's registry entry. Comparing a number costs less than getpid(), which
is a system call."""
from __future__ import annotations

import os
from typing import List

# [generation, pid]: the generation changes in every forked child.
state: List[int] = [0, os.getpid()]


def _after_fork_in_child() -> None:
    state[0] += 1
    state[1] = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)
