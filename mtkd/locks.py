"""Single-writer locks: one process at a time writes a store part or a run folder.

A ``SingleWriterLock`` is an ``flock`` on a lock file, taken before anything
is written, that holds its owner's description: ``pid 1234 on node7 (SLURM
job 4242), started 2025-01-31 10:02:11: train_kd.py ...`` (the SLURM part
only inside a SLURM job). A second writer is refused with that description.
The kernel drops an flock when its process ends, kill -9 included, so a
killed writer never blocks the next one; its file, with its description, is
left behind. What a new owner does with such a description is the subclass's
choice (``check_previous``): a store part ignores it, a run folder
(``mtkd.runs.RunLock``) takes over the lock of a process of this host that
has ended, and of its own SLURM job (a requeue), with a message, and refuses
one of another host, which it cannot check.

Locks are released (the file removed) by ``release``, and at the latest when
the process exits normally or leaves through ``release_held_locks`` (the DDP
exit, which skips the interpreter's teardown). Only the process that took a
lock releases it: a forked child (a DataLoader worker) never does.
"""

import atexit
import fcntl
import os
import re
import socket
import sys
import time
from dataclasses import dataclass

_OWNER = re.compile(r"^pid (\d+) on (\S+?)(?: \(SLURM job ([^)]+)\))?, started")
_HELD = []  # the locks this process holds


@dataclass
class Owner:
    """Who held (or holds) a lock, read back from its lock file."""

    pid: int
    host: str
    slurm_job: str | None
    text: str  # the whole description, as written

    def is_this_host(self):
        return self.host == socket.gethostname()

    def is_this_slurm_job(self):
        """Whether the owner ran in the SLURM job this process runs in: a
        requeued job keeps its job ID, and SLURM never runs it twice at once."""
        return bool(self.slurm_job) and self.slurm_job == os.environ.get("SLURM_JOB_ID")

    def still_runs(self):
        """Whether the owner's process still runs (this host only): its pid is
        alive, is not this process, and runs the command the owner wrote (a pid
        reused by another program does not count)."""
        if not pid_runs(self.pid):
            return False
        command = self.text.split(": ", 1)[1].strip() if ": " in self.text else ""
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                running = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return True  # no /proc: alive is all we know
        return not command or command in running


def pid_runs(pid):
    """Whether process ``pid`` of this host runs (this process does not count)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return True


def owner_description():
    """This process as a lock file records it: pid, host, SLURM job, start
    time and command line (one line)."""
    command = " ".join(sys.argv) or "python"
    job = os.environ.get("SLURM_JOB_ID")
    slurm = f" (SLURM job {job})" if job else ""
    return (
        f"pid {os.getpid()} on {socket.gethostname()}{slurm}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}"
    )


def parse_owner(text):
    """The Owner a lock file's text describes, or None (empty or unknown text)."""
    text = text.strip()
    found = _OWNER.match(text)
    if not found:
        return None
    pid, host, job = found.groups()
    return Owner(int(pid), host, job, text)


class SingleWriterLock:
    """One process's exclusive claim on what ``lock_path`` guards.

    Subclasses say what a refusal is (``held_error``) and may refuse or
    comment on the description a process that has ended left in the file
    (``check_previous``).
    """

    def __init__(self, lock_path):
        self.lock_path = lock_path
        self.fd = None
        self.pid = None

    def held_error(self, owner):
        """The exception for a lock held by a running process (``owner``: its
        description)."""
        raise NotImplementedError

    def check_previous(self, text):
        """Called with the lock taken and the file's old text (a process that
        ended without releasing it; "" when there was none). Raising here
        gives the lock back. Default: nothing to say."""

    def acquire(self):
        """Takes the lock or raises ``held_error`` (or ``check_previous``'s
        error); returns self."""
        os.makedirs(os.path.dirname(os.path.abspath(self.lock_path)), exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read(fd)
                os.close(fd)
                raise self.held_error(
                    owner or "a process that has just started"
                ) from None
            # The holder before us may have removed the file after we opened
            # it: the lock only counts on the file that is there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            self.check_previous(_read(fd))
        except BaseException:
            os.close(fd)  # the file and its text stay as they were
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner_description().encode(), 0)
        self.fd, self.pid = fd, os.getpid()
        _HELD.append(self)
        return self

    def release(self):
        """Removes the lock file and drops the lock (idempotent; nothing in a
        forked child, whose parent still holds it)."""
        if self.fd is None or self.pid != os.getpid():
            return
        try:
            os.remove(self.lock_path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        if self in _HELD:
            _HELD.remove(self)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd):
    """A lock file's text (its owner's description), read without moving."""
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()


def held_locks():
    """The locks this process holds, oldest first."""
    return list(_HELD)


def release_held_locks():
    """Releases every lock this process holds (at exit)."""
    for lock in list(_HELD):
        lock.release()


atexit.register(release_held_locks)
