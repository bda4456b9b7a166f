"""Runs a stage script and SIGKILLs it once N batches are written to the store,
as a pre-empted job is killed (a test helper: the fault comes from the test side).

    python tests/kill_after_batches.py N save_teachers.py ARGS...
"""

import os
import runpy
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mtkd.store.writer  # noqa: E402


def kill_after(limit):
    """Makes ``PartWriter.append`` SIGKILL this process after ``limit`` batches."""
    real_append = mtkd.store.writer.PartWriter.append
    written = 0

    def append_then_maybe_die(self, *args, **kwargs):
        nonlocal written
        real_append(self, *args, **kwargs)
        written += 1
        if written >= limit:
            os.kill(os.getpid(), signal.SIGKILL)

    mtkd.store.writer.PartWriter.append = append_then_maybe_die


if __name__ == "__main__":
    kill_after(int(sys.argv[1]))
    sys.argv = sys.argv[2:]
    runpy.run_path(os.path.join(REPO, sys.argv[0]), run_name="__main__")
