"""What a teacher store is on disk: names, version, settings, part files.

The HDF5 layout of a part is described once, in ``docs/store-format.md``.
Everything here is shared by the writer (``mtkd.store.writer``) and the reader
(``mtkd.store.reader``): what a part must agree on with the others (its
*settings*), what its metadata records, and how its file is named.
"""

import glob
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import h5py
import numpy as np

from mtkd import RecipeError
from mtkd.disk import file_checksum

logger = logging.getLogger(__name__)

FORMAT_NAME = "mtkd-teacher-store"
# 2: a store may also hold one *unlabelled part* (``unlabelled-*.h5``): every
# teacher's targets on audio without transcripts, teacher-forced on their
# consensus. Parts of version 1 (no unlabelled part, same layout) still read.
# 3: the unlabelled part also holds each teacher's leave-one-out scores and
# each utterance's disagreement (``UNLABELLED_ARRAYS``), and its consensus
# breaks ties by the teachers' valid PER. Labelled parts are as in 1 and 2;
# an unlabelled part of version 2 still reads, without those arrays.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
UNLABELLED = "unlabelled"  # the split of the unlabelled part
UNLABELLED_PREFIX = "unlabelled-"
PARTIAL_SUFFIX = ".partial"
# Beside each complete part: its sha256, in `sha256sum` format (`sha256sum -c`
# checks it too). Damage anywhere in the file, even in bytes HDF5 reads only
# when an utterance's targets are fetched, is found before training.
CHECKSUM_SUFFIX = ".sha256"
ATT_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "gzip", "lzf")
# Settings that stores of format version 1 wrote and nothing ever read (per-
# frame CTC posteriors, top-K). They are dropped on reading, so such a store
# still reads, resumes and merges as one made without them.
RETIRED_SETTINGS = ("store_ctc_posteriors", "store_topk")
# Per-utterance arrays of a split: (name, dtype, one value per teacher or not).
INDEX_ARRAYS = (
    ("ref_lens", np.int32, False),
    ("att_offsets", np.int64, False),
    ("ctc_offsets", np.int64, False),
    ("ctc_lens", np.int32, True),
    ("ctc_per", np.float32, True),
    ("att_per", np.float32, True),
    ("ctc_edits", np.int32, True),
    ("att_edits", np.int32, True),
)


# Per-utterance arrays of the unlabelled split only, as INDEX_ARRAYS. Version 2
# parts hold the first one alone.
UNLABELLED_ARRAYS = (
    ("consensus_teacher", np.int32, False),
    ("loo_teacher", np.int32, True),
    ("loo_ctc_per", np.float32, True),
    ("loo_att_per", np.float32, True),
    ("disagreement", np.float32, False),
)
LEAVE_ONE_OUT_ARRAYS = tuple(name for name, _, _ in UNLABELLED_ARRAYS[1:])


class StoreError(RecipeError):
    """A store (or a part of it) that cannot be written or read as asked."""


def manifest_info(json_path):
    """Identity of a split's manifest: fingerprint, utterance count and hours.

    The fingerprint is sha256 over the sorted (utt_id, phn) pairs: it does not
    depend on where the corpus lies (no wav paths), so a moved corpus matches.
    """
    with open(json_path, encoding="utf-8") as f:
        manifest = json.load(f)
    digest = hashlib.sha256()
    for utt_id in sorted(manifest):
        # Unlabelled audio has no phones: its IDs alone identify it.
        phones = str(manifest[utt_id].get("phn", "")).strip()
        digest.update(f"{utt_id}\t{phones}\n".encode())
    seconds = sum(float(entry.get("duration", 0.0)) for entry in manifest.values())
    return {
        "fingerprint": digest.hexdigest(),
        "n_utt": len(manifest),
        "hours": seconds / 3600.0,
    }


@dataclass
class StoreOptions:
    """What the targets are made of; parts of one store must agree on it all."""

    temperature: float = 1.0
    att_dist_dtype: str = "float16"
    compression: str = None  # None, "gzip" or "lzf" (HDF5 filters, lossless)

    def __post_init__(self):
        if self.att_dist_dtype not in ATT_DTYPES:
            raise StoreError(
                f"att_dist_dtype must be one of {ATT_DTYPES}, got "
                f"{self.att_dist_dtype!r}"
            )
        if self.compression not in COMPRESSIONS:
            raise StoreError(
                f"store_compression must be one of {COMPRESSIONS}, got "
                f"{self.compression!r}"
            )
        if not self.temperature > 0:
            raise StoreError(f"temperature must be > 0, got {self.temperature}")
        self.temperature = float(self.temperature)


def store_settings(labels, special_indices, options, splits):
    """The store-wide settings every part records and must share.

    ``splits``: {split: manifest_info(...)}; only fingerprints are compared.
    """
    return {
        "labels": list(labels),
        **{k: int(v) for k, v in special_indices.items()},
        "temperature": options.temperature,
        "att_dist_dtype": options.att_dist_dtype,
        "fingerprints": {s: info["fingerprint"] for s, info in splits.items()},
    }


def settings_differences(old, new):
    """Human-readable list of what differs between two settings dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key == "labels":
            out.append("label encoder (labels or their order)")
        elif key == "fingerprints":
            for split in sorted(set(old[key]) | set(new[key])):
                if old[key].get(split) != new[key].get(split):
                    out.append(f"{split} manifest (utterances or phones)")
        else:
            out.append(f"{key}: {old.get(key)!r} then {new.get(key)!r}")
    return out


def part_meta(teachers, settings, splits, list_file, list_size, options):
    """The metadata of a part about to be written (``/meta_json``)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "options": {"compression": options.compression},
        "labels": settings["labels"],
        "list_file": os.path.abspath(list_file),
        "list_size": int(list_size),
        "teachers": [t.describe() for t in teachers],
        "splits": {s: dict(info) for s, info in splits.items()},
    }


def part_file_name(indices):
    """File name of the part holding teachers ``indices`` (0-based, sorted).

    ``[3]`` -> ``part-t003.h5``; ``[0..9]`` -> ``part-t000-t009.h5``;
    ``[0, 3, 5]`` -> ``part-t000_t003_t005.h5`` (long sets get a short hash).
    """
    indices = sorted(int(i) for i in indices)
    if len(indices) == 1:
        return f"part-t{indices[0]:03d}.h5"
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"part-t{indices[0]:03d}-t{indices[-1]:03d}.h5"
    if len(indices) <= 6:
        return "part-" + "_".join(f"t{i:03d}" for i in indices) + ".h5"
    digest = hashlib.sha1(",".join(map(str, indices)).encode()).hexdigest()[:8]
    return f"part-t{indices[0]:03d}_n{len(indices)}_{digest}.h5"


def part_path(folder, indices):
    """Path of the part file of teachers ``indices`` in the store ``folder``."""
    return os.path.join(folder, part_file_name(indices))


def complete_part_files(folder):
    """Complete labelled part files of a store folder (``*.h5``; ``.partial``
    and the unlabelled part excluded)."""
    return sorted(
        path
        for path in glob.glob(os.path.join(glob.escape(folder), "*.h5"))
        if not os.path.basename(path).startswith(UNLABELLED_PREFIX)
    )


def unlabelled_part_files(folder):
    """Complete unlabelled part files of a store folder (at most one is valid)."""
    pattern = os.path.join(glob.escape(folder), UNLABELLED_PREFIX + "*.h5")
    return sorted(glob.glob(pattern))


def unlabelled_part_path(folder, n_teachers):
    """``unlabelled-t000-t009.h5``: the part of all ``n_teachers`` teachers."""
    return os.path.join(
        folder, UNLABELLED_PREFIX + part_file_name(range(n_teachers))[len("part-") :]
    )


def shared_settings(settings):
    """What every part of a store must agree on, labelled or not: the
    settings without the manifests' fingerprints."""
    return {k: v for k, v in settings.items() if k != "fingerprints"}


def partial_part_files(folder):
    """Unfinished part files of a store folder (a killed or running writer)."""
    return glob.glob(os.path.join(glob.escape(folder), "*" + PARTIAL_SUFFIX))


def read_part_header(path):
    """(meta dict, teacher indices list) of a complete part file (one without
    a checksum file is read in full in another process first:
    ``check_part_without_checksum``)."""
    check_part_without_checksum(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME or not f.attrs.get("complete"):
                raise StoreError(f"{path} is not a complete teacher store part.")
            version = int(f.attrs.get("format_version", -1))
            if version not in READABLE_VERSIONS:
                raise StoreError(
                    f"{path} has store format version {version}, this code reads "
                    f"versions {', '.join(map(str, READABLE_VERSIONS))}: run "
                    "save_teachers.py again."
                )
            meta = json.loads(f["meta_json"][()])
            indices = [int(i) for i in f.attrs["teacher_indices"]]
    except StoreError:
        raise
    except READ_ERRORS as err:
        raise damaged_part(path, err) from None
    for key in RETIRED_SETTINGS:
        meta["settings"].pop(key, None)
    return meta, indices


# A part written before checksum files existed has no sidecar to tell its
# damage; HDF5 may crash the process that reads a damaged one (glibc "double
# free or corruption", exit status 134, no message) or never return. So such
# a part is read in full in a child process first, which only h5py loads,
# and its distributions are checked to be probabilities (damage in bytes
# that HDF5 reads without complaint).
_READ_EVERY_DATASET = """
import sys, h5py, numpy

def read(name, obj):
    if isinstance(obj, h5py.Dataset):
        rows = obj.shape[0] if obj.shape else 0
        if not rows:
            obj[()]
        for start in range(0, rows, 1 << 18):
            block = obj[start : start + (1 << 18)]
            if name.endswith("att_dist") and not (
                numpy.isfinite(block).all() and 0 <= block.min() <= block.max() <= 1.001
            ):
                last = start + len(block) - 1
                sys.exit(f"{name} rows {start} to {last} hold values that are no "
                         "probabilities: NaN, infinite, negative or above 1")
    for key in obj.attrs:
        obj.attrs[key]

with h5py.File(sys.argv[1], "r") as part:
    for key in part.attrs:
        part.attrs[key]
    part.visititems(read)
"""
# Seconds a full read may take: a minute, plus 10 s per 100 MB.
_FULL_READ_SECONDS = (60.0, 10.0 / 100e6)
_READ_IN_FULL = set()  # (path, size, mtime) read in full by this process


def check_part_without_checksum(path):
    """Reads a part that has no checksum file in full, in a child process, so
    that damage inside it is a StoreError here rather than a crash later
    (once per process and file). Nothing is written: a reader leaves the
    store as it is; the warning gives the ``sha256sum`` command that writes
    the checksum file. Parts with a checksum file are left to
    ``verify_part_checksum``."""
    if os.path.exists(path + CHECKSUM_SUFFIX) or not os.path.isfile(path):
        return
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key in _READ_IN_FULL:
        return
    base, per_byte = _FULL_READ_SECONDS
    limit = base + per_byte * stat.st_size
    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_EVERY_DATASET, path],
            capture_output=True, text=True, timeout=limit,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        how = f"reading it did not end in {limit:.0f} s"
        raise _unreadable_old_part(path, how) from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else "no message"
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            how = f"the process reading it was killed by {name} ({last})"
        else:
            how = f"reading it failed ({last})"
        raise _unreadable_old_part(path, how)
    _READ_IN_FULL.add(key)
    folder, name = os.path.split(os.path.abspath(path))
    logger.warning(
        "%s has no checksum file (written before checksums existed): it was read "
        "in full without a fault. This is done each time the store is opened; "
        "to check it by its checksum instead, write the file once: cd %s && "
        "sha256sum %s > %s%s",
        path, folder, name, name, CHECKSUM_SUFFIX,
    )  # fmt: skip


def _unreadable_old_part(path, how):
    return StoreError(
        f"{path} has no checksum file (it was written before checksums existed) "
        f"and cannot be read in full: {how}. The file is damaged: write this part "
        "again with save_teachers.py (--overwrite True), or restore it."
    )


# What h5py and json raise on a part file whose bytes are damaged.
READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def damaged_part(path, err):
    """The StoreError for a part file that ``err`` could not be read from."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(
        f"{path} cannot be read as a teacher store part ({reason}): the file is "
        "damaged. Write it again with save_teachers.py (--overwrite True), or "
        "restore it."
    )


def write_part_checksum(written, path):
    """Writes ``path + CHECKSUM_SUFFIX`` for the bytes of ``written`` (the
    finished ``.partial`` file that is renamed to ``path`` next)."""
    line = f"{file_checksum([written])}  {os.path.basename(path)}\n"
    tmp = path + CHECKSUM_SUFFIX + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(line)
    os.replace(tmp, path + CHECKSUM_SUFFIX)


def remove_part(path):
    """Deletes a complete part and its checksum file (replaced by overwrite)."""
    os.remove(path)
    if os.path.exists(path + CHECKSUM_SUFFIX):
        os.remove(path + CHECKSUM_SUFFIX)


def verify_part_checksum(path):
    """Checks a part against its checksum file; True if checked, False if it
    has none (parts written before checksums). StoreError if they differ."""
    sidecar = path + CHECKSUM_SUFFIX
    if not os.path.exists(sidecar):
        return False
    with open(sidecar, encoding="utf-8") as f:
        expected = (f.read().split() or [""])[0]
    if file_checksum([path]) != expected:
        raise StoreError(
            f"{path} does not match its checksum ({sidecar}): the file was "
            "damaged or changed after it was written. Write this part again "
            "with save_teachers.py (--overwrite True), or restore the file."
        )
    return True
