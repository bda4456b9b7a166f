"""Runs a stage script and SIGKILLs it once N batches are written to the store
or trained, as a pre-empted job is killed (a test helper: the fault comes from
the test side).

    python tests/kill_after_batches.py N save_teachers.py ARGS...
    python tests/kill_after_batches.py N --stop save_teachers.py ARGS...
    python tests/kill_after_batches.py N --signal=INT save_teachers.py ARGS...
    python tests/kill_after_batches.py N --signal=TERM --group train_kd.py ARGS...

``--stop`` sends SIGSTOP instead: the writer freezes mid-way, holding its part,
until the test sends SIGCONT (no race with a fast writer). ``--signal=NAME``
sends that signal once (INT: Ctrl-C; TERM: a scheduler's stop). ``--group``
sends it to the whole process group from another process, DataLoader workers
included, as SLURM does at a time limit or pre-emption: start the helper in a
session of its own (``start_new_session=True``) so that the test is not in
that group.
"""

import os
import runpy
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mtkd.brain  # noqa: E402
import mtkd.store.writer  # noqa: E402

# After a signal to the group, the main process waits this long (seconds)
# before it goes on, so that every process of the group has received it and
# acted on it (a worker that dies of it has died) whatever the machine's load.
GROUP_SIGNAL_SETTLE_S = 2.0


def signal_group_from_outside(sig):
    """Sends ``sig`` to this process's group from another process, as SLURM's
    step daemon does. The sender matters: a DataLoader worker that gets
    SIGTERM from its own parent takes it for a shutdown and exits quietly,
    from anyone else it dies of it (torch's worker signal handler)."""
    code = (
        "import os, signal, sys; signal.signal(int(sys.argv[2]), signal.SIG_IGN); "
        "os.killpg(int(sys.argv[1]), int(sys.argv[2]))"
    )
    # The sender is in the group too: it ignores the signal it sends.
    subprocess.run(
        [sys.executable, "-c", code, str(os.getpgrp()), str(int(sig))], check=True
    )


def kill_after(limit, sig=signal.SIGKILL, group=False):
    """Makes ``PartWriter.append`` (a store batch written) and
    ``ASRBrain.on_fit_batch_end`` (a batch trained) send ``sig`` to this
    process, or to its process group, after ``limit`` batches (SIGSTOP: once,
    at that batch)."""
    done = 0

    def after_batch():
        nonlocal done
        done += 1
        if done == limit or (done > limit and sig == signal.SIGKILL):
            if group:
                signal_group_from_outside(sig)
                time.sleep(GROUP_SIGNAL_SETTLE_S)
            else:
                os.kill(os.getpid(), sig)

    real_append = mtkd.store.writer.PartWriter.append
    real_batch_end = mtkd.brain.ASRBrain.on_fit_batch_end

    def append_then_maybe_die(self, *args, **kwargs):
        real_append(self, *args, **kwargs)
        after_batch()

    def batch_end_after_maybe_dying(self, *args, **kwargs):
        after_batch()  # before the stage looks for a stop signal
        real_batch_end(self, *args, **kwargs)

    mtkd.store.writer.PartWriter.append = append_then_maybe_die
    mtkd.brain.ASRBrain.on_fit_batch_end = batch_end_after_maybe_dying


if __name__ == "__main__":
    args = sys.argv[2:]
    sig = signal.SIGKILL
    if args[0] == "--stop":
        sig, args = signal.SIGSTOP, args[1:]
    elif args[0].startswith("--signal="):  # e.g. --signal=INT, --signal=TERM
        sig, args = signal.Signals["SIG" + args[0].split("=", 1)[1]], args[1:]
    group = args[0] == "--group"
    if group:
        args = args[1:]
    kill_after(int(sys.argv[1]), sig, group)
    sys.argv = args
    runpy.run_path(os.path.join(REPO, sys.argv[0]), run_name="__main__")
