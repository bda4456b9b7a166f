"""Files on disk: a full disk, told once and plainly; checksums of files.

A full disk shows itself in many disguises: ``OSError`` with errno ENOSPC (or
EDQUOT, a quota), an h5py ``OSError``/``RuntimeError`` whose text carries
``errno = 28``, torch's ``RuntimeError: [enforce fail at inline_container.cc]
... unexpected pos`` with no errno at all, or errors that h5py cannot raise
(it flushes its chunk cache while deallocating objects) and only prints as
"Exception ignored" -- once per batch, while the run writes on. Here they all
become one ``DiskFullError``: which file, which folder, how much is free, and
what to do. The writers that use it leave nothing that reads as complete, so
the same command resumes once space is freed.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import sys

from mtkd import RecipeError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "errno = 28")
# torch's zip writer reports a short write without errno; with this little
# space left after it, the disk was full.
NEARLY_FULL_BYTES = 1 << 20
_TORCH_WRITE_TEXTS = ("inline_container", "PytorchStreamWriter", "unexpected pos")


class DiskFullError(RecipeError):
    """Writing a file failed because its disk (or quota) is full."""


def free_bytes(path):
    """Bytes free to this user on the file system of ``path`` (or its nearest
    existing parent folder); None when it cannot be told."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(err, path=None):
    """Whether ``err`` (any exception) means the disk of ``path`` is full."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    text = str(err)
    if any(marker in text for marker in _DISK_FULL_TEXTS):
        return True
    if path is not None and any(marker in text for marker in _TORCH_WRITE_TEXTS):
        free = free_bytes(path)
        return free is not None and free < NEARLY_FULL_BYTES
    return False


def _size(n_bytes):
    """1234567 -> "1.2 MB"."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    for unit in ("kB", "MB", "GB"):
        n_bytes /= 1000
        if n_bytes < 1000 or unit == "GB":
            break
    return f"{n_bytes:.1f} {unit}"


def disk_full_error(path, what="the file"):
    """The DiskFullError for a failed write of ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    free = free_bytes(folder)
    left = f"{_size(free)} free there now" if free is not None else "free space unknown"
    return DiskFullError(
        f"The disk is full: writing {what} {path} failed (no space left in "
        f"{folder}; {left}). Nothing that reads as complete was left behind. "
        "Free some space there (or point the run at another folder) and run the "
        "same command again: it resumes."
    )


@contextlib.contextmanager
def unraisable_disk_full():
    """Collects the disk-full errors that h5py can only print ("Exception
    ignored in ... __dealloc__"): yields a list they are appended to, and keeps
    them off stderr. Cython prints such an error twice, through
    ``sys.excepthook`` and ``sys.unraisablehook``; both are filtered. Other
    errors are printed as usual.

    After one of them HDF5 holds a half-closed object and crashes when it
    shuts down at exit: the stage scripts end with ``os._exit`` on a
    DiskFullError (``mtkd.hparams.run_stage``).
    """
    caught = []
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable_hook(unraisable):
        if unraisable.exc_value is not None and is_disk_full(unraisable.exc_value):
            if unraisable.exc_value not in caught:
                caught.append(unraisable.exc_value)
        else:
            previous_unraisable(unraisable)

    def except_hook(exc_type, exc_value, exc_traceback):
        if is_disk_full(exc_value):
            if exc_value not in caught:
                caught.append(exc_value)
        else:
            previous_except(exc_type, exc_value, exc_traceback)

    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    try:
        yield caught
    finally:
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except


def file_checksum(paths, chunk=1 << 22):
    """sha256 (hex) over the bytes of ``paths`` in order: a teacher's identity
    (its weights, statistics and config), a store part's checksum."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()
