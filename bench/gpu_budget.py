"""Time budgets of ``bench/gpu_check.py``: deadlines, and commands run within them.

A check is given a ``Deadline`` (a point on ``time.monotonic()``). The commands
it runs (``Command``: ``python SCRIPT ...`` from the repository root, output to
a log file) are stopped when the deadline comes; its loops ask
``deadline.left()``. A check that finds its outcome wrong raises
``CheckFailed`` with a message that says what and where the log is; one that
cannot run here raises ``CheckSkipped`` with the reason.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Seconds a stopped command gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 10.0


class CheckFailed(Exception):
    """A check ran and its outcome is wrong (the message says what);
    ``figures``: what it measured all the same, recorded with the failure."""

    def __init__(self, message, figures=None):
        super().__init__(message)
        self.figures = figures or {}


class CheckSkipped(Exception):
    """A check that cannot run here (the message says why: no GPU for fp16,
    an earlier check it needs did not pass, ...)."""


class Deadline:
    """A point in time (``time.monotonic()`` seconds) a check must end by."""

    def __init__(self, at):
        self.at = at

    @classmethod
    def after(cls, seconds):
        return cls(time.monotonic() + seconds)

    def left(self):
        """Seconds left (0 once the deadline has passed)."""
        return max(0.0, self.at - time.monotonic())

    def passed(self):
        return self.left() <= 0.0


@dataclass
class CommandResult:
    """How a command ended: exit status (None if it was stopped), wall
    seconds, whether the deadline stopped it, its log file, and its CPU
    seconds (user + system, with the processes it waited for; None if
    stopped)."""

    argv: list
    returncode: int
    seconds: float
    stopped_at_deadline: bool
    log: str
    cpu_s: float = None

    @property
    def ok(self):
        return self.returncode == 0 and not self.stopped_at_deadline

    def describe(self):
        """One line for notes: how it ended and where its log is."""
        if self.stopped_at_deadline:
            how = f"stopped by its time budget after {self.seconds:.0f} s"
        else:
            how = f"exit status {self.returncode} after {self.seconds:.0f} s"
        script = self.argv[1] if self.argv[0] == "-m" else self.argv[0]
        return f"{os.path.basename(script)}: {how} (log: {self.log})"

    def log_tail(self, lines=20):
        """The last ``lines`` lines of the command's log."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


# Commands started and not yet waited for (stopped together on Ctrl-C).
RUNNING = set()


class Command:
    """``python ARGV...`` run from the repository root in its own process
    group (so that stopping it stops the processes it started too), stdout and
    stderr appended to ``log``."""

    def __init__(self, argv, log, env=None, threads=None):
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONUNBUFFERED"] = "1"
        if threads:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.proc = None
        self.started = None
        self.cpu_s = None

    def start(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log)), exist_ok=True)
        with open(self.log, "a", encoding="utf-8") as out:
            out.write(f"$ python {' '.join(self.argv)}\n")
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, *self.argv],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()
        RUNNING.add(self)
        return self

    def wait(self, deadline):
        """Waits until the command ends or ``deadline``; returns a CommandResult."""
        stopped = not self._reap(deadline.left())
        if stopped:
            self.stop()
        RUNNING.discard(self)
        return CommandResult(
            argv=self.argv,
            returncode=None if stopped else self.proc.returncode,
            seconds=time.monotonic() - self.started,
            stopped_at_deadline=stopped,
            log=self.log,
            cpu_s=self.cpu_s,
        )

    def _reap(self, timeout):
        """Waits up to ``timeout`` seconds for the command to end; True once it
        has, with its exit status and CPU seconds (the processes it waited
        for included) recorded."""
        end = time.monotonic() + timeout
        while self.proc.returncode is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() >= end:
                return False
            time.sleep(0.1)
        return True

    def stop(self):
        """SIGTERM to the command's process group, SIGKILL after the grace."""
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            if self._reap(grace):
                return


def stop_all_commands():
    """Stops every command still running (e.g. on Ctrl-C)."""
    for command in list(RUNNING):
        command.stop()
        RUNNING.discard(command)


def run_commands(commands, deadline):
    """Starts every Command, waits for all (each stopped at ``deadline``);
    returns their CommandResults in order."""
    for command in commands:
        command.start()
    return [command.wait(deadline) for command in commands]


def run_command(argv, log, deadline, env=None, threads=None):
    """One command, run to its end or ``deadline``; returns its CommandResult."""
    return run_commands([Command(argv, log, env, threads)], deadline)[0]
