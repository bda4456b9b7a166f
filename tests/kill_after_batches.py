"""Runs a stage script and SIGKILLs it once N batches are written to the store,
as a pre-empted job is killed (a test helper: the fault comes from the test side).

    python tests/kill_after_batches.py N save_teachers.py ARGS...
    python tests/kill_after_batches.py N --stop save_teachers.py ARGS...
    python tests/kill_after_batches.py N --signal=INT save_teachers.py ARGS...

``--stop`` sends SIGSTOP instead: the writer freezes mid-way, holding its part,
until the test sends SIGCONT (no race with a fast writer). ``--signal=NAME``
sends that signal once (INT: Ctrl-C; TERM: a scheduler's stop).
"""

import os
import runpy
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mtkd.store.writer  # noqa: E402


def kill_after(limit, sig=signal.SIGKILL):
    """Makes ``PartWriter.append`` send ``sig`` to this process after ``limit``
    batches (SIGSTOP: once, at that batch)."""
    real_append = mtkd.store.writer.PartWriter.append
    written = 0

    def append_then_maybe_die(self, *args, **kwargs):
        nonlocal written
        real_append(self, *args, **kwargs)
        written += 1
        if written == limit or (written > limit and sig == signal.SIGKILL):
            os.kill(os.getpid(), sig)

    mtkd.store.writer.PartWriter.append = append_then_maybe_die


if __name__ == "__main__":
    option = sys.argv[2]
    if option == "--stop":
        sig = signal.SIGSTOP
    elif option.startswith("--signal="):  # e.g. --signal=INT, --signal=TERM
        sig = signal.Signals["SIG" + option.split("=", 1)[1]]
    else:
        sig, option = signal.SIGKILL, None
    kill_after(int(sys.argv[1]), sig)
    sys.argv = sys.argv[3:] if option else sys.argv[2:]
    runpy.run_path(os.path.join(REPO, sys.argv[0]), run_name="__main__")
