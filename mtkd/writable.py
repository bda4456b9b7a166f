"""Folders a stage cannot write to, told once and plainly.

A read-only folder (permissions, or a read-only mount), an output folder
that is a file, a file where a folder should be: Python raises
``PermissionError``, ``NotADirectoryError``, ``FileExistsError`` or an
``OSError`` with errno EROFS, and h5py an ``OSError`` whose text carries
``errno = 13`` or ``errno = 30``. Each stage checks its output folders before
any work (``check_output_folder``), and ``mtkd.hparams.run_stage`` turns
any such error met later into one message naming the path
(``cannot_write_message``). Every writer in the recipe writes a temporary
name and renames it, so a refused write leaves nothing half-written.
"""

import errno
import os
import re

from mtkd import RecipeError

WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
_H5_ERRNO = re.compile(r"errno = (\d+)")
_H5_NAME = re.compile(r"name = '([^']+)'")


class NotWritableError(RecipeError):
    """A stage cannot write where it was told to."""


def _reason(code):
    if code == errno.EROFS:
        return "the file system is mounted read-only"
    return "permission denied"


def check_output_folder(folder, key="output_folder"):
    """Raises NotWritableError unless ``folder`` is (or can be made as) a
    writable folder; creates nothing."""
    folder = os.path.abspath(folder)
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if existing == folder and not os.path.isdir(folder):
        raise NotWritableError(
            f"{key} {folder} is a file, not a folder: remove or rename the file, "
            f"or give another --{key}."
        )
    if not os.path.isdir(existing):
        raise NotWritableError(
            f"{existing} is a file, not a folder, so {key} {folder} cannot be "
            f"made there: remove or rename the file, or give another --{key}."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (to make {key} {folder} in it)"
        raise NotWritableError(
            f"Cannot write in {existing}{made}: it is read-only for this user. "
            f"Make it writable, or give another --{key}."
        )


def cannot_write_message(err):
    """The one-paragraph message for an error that means "cannot write this
    path", or None when ``err`` means something else."""
    if not isinstance(err, OSError):
        return None
    code, path = err.errno, err.filename
    if code is None:  # h5py: the errno and file name are in the text
        found = _H5_ERRNO.search(str(err))
        code = int(found.group(1)) if found else None
        name = _H5_NAME.search(str(err))
        path = name.group(1) if name else path
    path = path or "a file"
    if isinstance(err, NotADirectoryError) or code == errno.ENOTDIR:
        return (
            f"Cannot write {path}: a part of that path is a file, not a folder. "
            "Remove or rename that file, or choose another output folder."
        )
    if isinstance(err, FileExistsError) and os.path.isfile(path):
        return (
            f"Cannot make the folder {path}: a file of that name exists. Remove "
            "or rename it, or choose another output folder."
        )
    if code in WRITE_ERRNOS:
        return (
            f"Cannot write {path}: {_reason(code)}. Make its folder writable, or "
            "choose another output folder. What was written before is complete; "
            "the same command resumes once the folder is writable."
        )
    return None
