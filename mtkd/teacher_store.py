"""The teacher store: what distillation needs from every teacher, by utterance ID.

Written once by ``save_teachers.py`` (stage 2), read by the student (stage 3)
with any batch size, order, sampler or augmentation: nothing in it depends on
how the utterances were batched when it was made.

Files
    A store is a folder of HDF5 *parts* (``part-t000.h5``, ``part-t000-t009.h5``,
    ...), each holding some teachers (by their 0-based index in the teacher list
    file) for every utterance of every split; read together they are one store,
    teachers ordered by list index. A part is written as ``NAME.h5.partial`` and
    renamed when complete, so a killed run leaves nothing that reads as
    complete. ``TeacherStore`` also opens a single part file (e.g. a merged one).

Layout of one part (N teachers, V labels; U utterances of a split; utterance-
major, so one utterance's data for all N teachers is one slice per dataset)::

    /meta_json                 JSON string: format, labels, indices, options,
                               teachers (path, checksum, config, hyperparams),
                               splits (fingerprint, hours, corpus-level PERs)
    attrs: format, format_version, teacher_indices [N], complete
    /<split>/utt_ids           [U] str, the manifest keys
    /<split>/ref_lens          [U] int32, L_u = reference phones
    /<split>/att_offsets       [U] int64, first row of u in att_dist
    /<split>/att_dist          [sum_u N*(L_u+1), V] float16 (or float32):
                               rows off_u .. off_u + N*(L_u+1) reshape to
                               [N, L_u+1, V], teacher-forced softmax(logits/T);
                               gzip chunks of 512 rows by default (lossless),
                               contiguous with store_compression null
    /<split>/ctc_offsets       [U] int64, first element of u in ctc_hyps
    /<split>/ctc_lens          [U, N] int32, greedy CTC hypothesis lengths
    /<split>/ctc_hyps          [sum] int16, u's N hypotheses back to back
    /<split>/ctc_per, att_per  [U, N] float32, per-utterance PER (%, <= 100)
    /<split>/ctc_edits, att_edits [U, N] int32, uncapped edit counts
    optional (store_ctc_posteriors / store_topk):
    /<split>/post_offsets      [U] int64; post_frames [U, N] int32 (T'_u,k)
    /<split>/ctc_log_post      [sum_u sum_k T'_u,k, V] float16 log_softmax(z/T)
    /<split>/topk_ids, topk_log_post  [same rows, K] int16 / float16
"""

import fcntl
import glob
import hashlib
import itertools
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from tqdm import tqdm

from mtkd import RecipeError
from mtkd.disk import (
    DiskFullError,
    disk_full_error,
    free_bytes,
    is_disk_full,
    unraisable_disk_full,
)
from mtkd.teachers import UttTargets, teacher_targets

FORMAT_NAME = "mtkd-teacher-store"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
# Test hook: SIGKILL the writing process after this many batches (a pre-empted
# job), to check that a killed run leaves no complete-looking part behind.
KILL_HOOK_ENV = "MTKD_TEST_KILL_AFTER_BATCHES"
ATT_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "gzip", "lzf")
# Free space a part writer keeps beyond each batch (see PartWriter.check_space).
SPACE_MARGIN_BYTES = 16 << 20


class StoreError(RecipeError):
    """A store (or a part of it) that cannot be written or read as asked."""


# --------------------------------------------------------------------------
# Manifests and settings


def manifest_info(json_path):
    """Identity of a split's manifest: fingerprint, utterance count and hours.

    The fingerprint is sha256 over the sorted (utt_id, phn) pairs: it does not
    depend on where the corpus lies (no wav paths), so a moved corpus matches.
    """
    with open(json_path, encoding="utf-8") as f:
        manifest = json.load(f)
    digest = hashlib.sha256()
    for utt_id in sorted(manifest):
        digest.update(f"{utt_id}\t{manifest[utt_id]['phn'].strip()}\n".encode())
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
    store_ctc_posteriors: bool = False
    store_topk: int = 0
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
        self.store_topk = int(self.store_topk or 0)
        self.store_ctc_posteriors = bool(self.store_ctc_posteriors)

    @classmethod
    def from_hparams(cls, hparams):
        """Reads the YAML keys of the same names (defaults where absent)."""
        keys = ("temperature", "att_dist_dtype", "store_ctc_posteriors", "store_topk")
        values = {k: hparams[k] for k in keys if k in hparams}
        return cls(**values, compression=hparams.get("store_compression"))

    @property
    def keeps_posteriors(self):
        """Whether per-frame CTC posteriors must be computed at all."""
        return self.store_ctc_posteriors or self.store_topk > 0


def store_settings(labels, special_indices, options, splits):
    """The store-wide settings every part records and must share.

    ``splits``: {split: manifest_info(...)}; only fingerprints are compared.
    """
    return {
        "labels": list(labels),
        **{k: int(v) for k, v in special_indices.items()},
        "temperature": options.temperature,
        "att_dist_dtype": options.att_dist_dtype,
        "store_ctc_posteriors": options.store_ctc_posteriors,
        "store_topk": options.store_topk,
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


# --------------------------------------------------------------------------
# Part files


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


def complete_part_files(folder):
    """Complete part files of a store folder (``*.h5``; ``.partial`` excluded)."""
    return sorted(glob.glob(os.path.join(glob.escape(folder), "*.h5")))


def read_part_header(path):
    """(meta dict, teacher indices list) of a complete part file."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME or not f.attrs.get("complete"):
                raise StoreError(f"{path} is not a complete teacher store part.")
            version = int(f.attrs.get("format_version", -1))
            if version != FORMAT_VERSION:
                raise StoreError(
                    f"{path} has store format version {version}, this code reads "
                    f"{FORMAT_VERSION}: run save_teachers.py again."
                )
            meta = json.loads(f["meta_json"][()])
            return meta, [int(i) for i in f.attrs["teacher_indices"]]
    except OSError as err:
        raise StoreError(f"{path} cannot be read as HDF5 ({err}).") from err


def _growing(group, name, width, dtype, compression, chunk_rows):
    """An empty dataset that grows along axis 0 ([0] or [0, width])."""
    shape = (0,) if width is None else (0, width)
    return group.create_dataset(
        name,
        shape=shape,
        maxshape=(None, *shape[1:]),
        dtype=dtype,
        chunks=(chunk_rows, *shape[1:]),
        compression=compression,
        shuffle=compression is not None,
    )


def _append(dataset, values):
    """Appends ``values`` along axis 0; returns the offset they start at."""
    start = dataset.shape[0]
    if len(values):
        dataset.resize(start + len(values), axis=0)
        dataset[start:] = values
    return start


class PartLock:
    """One process's exclusive claim on writing one part file.

    The claim is an ``flock`` on ``PART.h5.lock``, taken before the
    ``.partial`` file is opened: a second writer of the same part (the same
    command run twice, or two runs sharing a ``store_folder``) is refused with
    the first writer's pid, host and command before it touches anything, and
    the first finishes. The kernel drops the lock when its process dies (kill
    -9 included), so a killed writer never blocks the next run.
    """

    SUFFIX = ".lock"

    def __init__(self, path):
        self.path = path
        self.lock_path = path + self.SUFFIX
        self.fd = None

    def acquire(self):
        """Takes the lock or raises a StoreError naming the part and its writer."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 4096).decode(errors="replace").strip()
                os.close(fd)
                owner = owner or "a process that has just started"
                raise StoreError(
                    f"{self.path} is being written by another run ({owner}; lock "
                    f"file {self.lock_path}). "
                    "Two writers of one part would destroy each other's work: wait "
                    "for that run to finish (its part is then reused), or stop it "
                    "and run this command again."
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
        os.ftruncate(fd, 0)
        os.write(fd, _writer_description().encode())
        self.fd = fd
        return self

    def release(self):
        """Removes the lock file and drops the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            os.remove(self.lock_path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def claim_parts(folder, todo):
    """Locks the part file of every teacher group in ``todo`` (see PartLock).

    Returns {teacher group (tuple): PartLock}; all or none: when one part is
    held by another run, the locks taken so far are released and its
    StoreError is raised, before anything is written.
    """
    locks = {}
    try:
        for indices in todo:
            path = os.path.join(folder, part_file_name(indices))
            locks[tuple(indices)] = PartLock(path).acquire()
    except BaseException:
        for lock in locks.values():
            lock.release()
        raise
    return locks


def _writer_description():
    """Who holds a part: pid, host, start time and command line."""
    command = " ".join(sys.argv) or "python"
    return (
        f"pid {os.getpid()} on {socket.gethostname()}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}"
    )


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
POSTERIOR_INDEX_ARRAYS = (
    ("post_offsets", np.int64, False),
    ("post_frames", np.int32, True),
)


class PartWriter:
    """Writes one part file: ``begin_split`` / ``append`` ... / ``end_split``,
    then ``close``.

    The file is ``path + ".partial"`` until ``close`` renames it to ``path``.
    The large arrays (distributions, hypotheses, posteriors) are appended batch
    by batch; the small per-utterance arrays are kept in memory and written at
    the end of each split.
    """

    def __init__(self, path, meta, teacher_indices, options, n_labels, lock=None):
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self.meta = meta
        self.options = options
        self.n_labels = n_labels
        self.n_teachers = len(teacher_indices)
        # The part is claimed before its .partial is opened (truncated): see
        # PartLock. A lock handed in stays the caller's to release.
        self.own_lock = lock is None
        self.lock = PartLock(path).acquire() if lock is None else lock
        try:
            self.file = h5py.File(self.partial, "w")
        except BaseException:
            self._release_lock()
            raise
        self.file.attrs["format"] = FORMAT_NAME
        self.file.attrs["format_version"] = FORMAT_VERSION
        self.file.attrs["teacher_indices"] = np.asarray(teacher_indices, np.int32)
        self.file.attrs["complete"] = False
        self.group = None
        self.rows = None

    def begin_split(self, split, att_rows=None):
        """Creates the split's datasets.

        ``att_rows``: sum over utterances of N * (L_u + 1) when known; the
        distributions then go to one contiguous dataset of exactly that size
        (no chunk padding; one read per utterance). Compression needs chunks.
        """
        g = self.file.create_group(split)
        v, comp, opts = self.n_labels, self.options.compression, self.options
        if att_rows is None or comp:
            # ~40 kB chunks: a few utterances of all teachers per chunk.
            _growing(g, "att_dist", v, opts.att_dist_dtype, comp, 512)
        else:
            g.create_dataset("att_dist", (att_rows, v), dtype=opts.att_dist_dtype)
        if opts.store_ctc_posteriors:
            _growing(g, "ctc_log_post", v, np.float16, comp, 512)
        if opts.store_topk:
            k = min(opts.store_topk, v)
            _growing(g, "topk_ids", k, np.int16, comp, 1024)
            _growing(g, "topk_log_post", k, np.float16, comp, 1024)
        self.group = g
        self.att_filled = 0
        self.hyps = []
        self.rows = {"utt_ids": []}
        for name, _, _ in INDEX_ARRAYS + POSTERIOR_INDEX_ARRAYS:
            self.rows[name] = []

    def check_space(self, targets):
        """Raises a DiskFullError, before anything of the batch is written,
        when the disk cannot take it with room to spare.

        HDF5 cannot report a full disk reliably: chunks are flushed when their
        handles are freed, where errors are only printed, and after such a
        failure it may crash. So the writer stops while there is still room:
        twice the batch's uncompressed bytes plus ``SPACE_MARGIN_BYTES`` (the
        chunk caches and metadata still to be flushed).
        """
        rows = sum(t.att_dist.shape[0] for row in targets for t in row)
        needed = rows * self.n_labels * np.dtype(self.options.att_dist_dtype).itemsize
        if self.options.keeps_posteriors:
            needed += sum(_frames(t) for row in targets for t in row) * (
                self.n_labels * 2
            )
        free = free_bytes(self.partial)
        if free is not None and free < 2 * needed + SPACE_MARGIN_BYTES:
            raise disk_full_error(self.partial, "the teacher store part")

    def append(self, utt_ids, targets):
        """Appends a batch: ``targets[b][k]`` is teacher k's UttTargets for b."""
        self.check_space(targets)
        rows = self.rows
        hyp_start = sum(len(h) for h in self.hyps)
        for utt_id, row in zip(utt_ids, targets, strict=True):
            rows["utt_ids"].append(utt_id)
            rows["ref_lens"].append(row[0].att_dist.shape[0] - 1)
            rows["att_offsets"].append(self.att_filled)
            rows["ctc_offsets"].append(hyp_start)
            self.att_filled += sum(t.att_dist.shape[0] for t in row)
            hyp_start += sum(len(t.ctc_hyp) for t in row)
            rows["ctc_lens"].append([len(t.ctc_hyp) for t in row])
            for name in ("ctc_per", "att_per", "ctc_edits", "att_edits"):
                rows[name].append([getattr(t, name) for t in row])
        flat = [t for row in targets for t in row]
        att = torch.cat([t.att_dist for t in flat]).numpy()
        self._write_att(att.astype(self.options.att_dist_dtype))
        self.hyps.append(torch.cat([t.ctc_hyp for t in flat]).numpy().astype(np.int16))
        if self.options.keeps_posteriors:
            self._append_posteriors(targets)

    def _write_att(self, att):
        dataset = self.group["att_dist"]
        start = self.att_filled - len(att)
        if dataset.maxshape[0] is None:
            _append(dataset, att)
        elif self.att_filled > dataset.shape[0]:
            raise StoreError(
                f"{self.partial}: more attention rows than the manifest's phones "
                "announce; was the manifest changed while the store was written?"
            )
        else:
            dataset[start : self.att_filled] = att

    def _append_posteriors(self, targets):
        """Per-frame outputs of the N teachers, utterance-major like the rest."""
        g, rows = self.group, self.rows
        first = "ctc_log_post" if "ctc_log_post" in g else "topk_ids"
        start = g[first].shape[0]
        for row in targets:
            frames = [_frames(t) for t in row]
            rows["post_offsets"].append(start)
            rows["post_frames"].append(frames)
            start += sum(frames)
        flat = [t for row in targets for t in row]
        if "ctc_log_post" in g:
            log_post = torch.cat([t.ctc_log_post for t in flat])
            _append(g["ctc_log_post"], log_post.numpy().astype(np.float16))
        if "topk_ids" in g:
            ids, values = _topk(flat, self.options.store_topk)
            _append(g["topk_ids"], ids.numpy().astype(np.int16))
            _append(g["topk_log_post"], values.numpy().astype(np.float16))

    def end_split(self, split):
        """Writes the per-utterance arrays and the split's corpus-level PERs."""
        g, rows = self.group, self.rows
        if self.att_filled != g["att_dist"].shape[0]:
            raise StoreError(
                f"{self.partial}: {self.att_filled} attention rows written for "
                f"{split}, {g['att_dist'].shape[0]} expected from its manifest."
            )
        hyps = np.concatenate(self.hyps) if self.hyps else np.zeros(0, np.int16)
        g.create_dataset("ctc_hyps", data=hyps)
        g.create_dataset("utt_ids", data=rows["utt_ids"], dtype=h5py.string_dtype())
        arrays = INDEX_ARRAYS
        if self.options.keeps_posteriors:
            arrays += POSTERIOR_INDEX_ARRAYS
        for name, dtype, per_teacher in arrays:
            values = np.asarray(rows[name], dtype=dtype)
            if per_teacher:
                values = values.reshape(-1, self.n_teachers)
            g.create_dataset(name, data=values)
        phones = max(int(np.sum(rows["ref_lens"])), 1)
        info = self.meta["splits"][split]
        info["per"] = {
            kind: [
                float(x)
                for x in 100.0 * np.asarray(rows[f"{kind}_edits"]).sum(axis=0) / phones
            ]
            for kind in ("ctc", "att")
        }
        info["n_utt_stored"] = len(rows["utt_ids"])

    def close(self, errors=()):
        """Writes the metadata, marks complete, renames to the final name.

        ``errors``: a list that h5py's unprintable write errors are collected
        in (``unraisable_disk_full``); the first is raised instead of renaming.
        """
        self.group = None  # dataset handles are flushed and closed with the file
        self.file.create_dataset("meta_json", data=json.dumps(self.meta))
        self.file.attrs["complete"] = True
        self.file.close()
        if errors:
            raise errors[0]
        os.replace(self.partial, self.path)
        self._release_lock()
        return self.path

    def abort(self):
        """Closes without publishing (the ``.partial`` file is removed)."""
        self.group = None  # no dataset handle may outlive the file
        try:
            if os.path.exists(self.partial):
                # Its contents are dropped anyway: freeing its space first lets
                # HDF5 flush and close cleanly on a full disk (else it retries
                # at exit, prints errors and may crash).
                os.truncate(self.partial, 0)
            self.file.close()
        except OSError:
            pass  # closing a dropped file: nothing of it is kept
        finally:
            if os.path.exists(self.partial):
                os.remove(self.partial)
            self._release_lock()

    def fail(self, err):
        """Aborts after ``err``; returns the error to raise (a DiskFullError
        naming the part when the disk is full, else ``err`` itself)."""
        self.abort()
        if isinstance(err, DiskFullError) or is_disk_full(err, self.partial):
            return disk_full_error(self.partial, "the teacher store part")
        return err

    def _release_lock(self):
        if self.own_lock:
            self.lock.release()


def _frames(targets):
    """T', the number of CTC frames of one UttTargets."""
    stored = targets.ctc_log_post
    return (stored if stored is not None else targets.topk_ids).shape[0]


def _topk(flat, k):
    """[sum T', K] ids and log-posteriors: given (a merge) or computed."""
    if flat[0].topk_ids is not None:
        ids = torch.cat([t.topk_ids for t in flat])
        return ids, torch.cat([t.topk_log_post for t in flat])
    log_post = torch.cat([t.ctc_log_post for t in flat])
    top = torch.topk(log_post, min(k, log_post.shape[1]), dim=-1)
    return top.indices, top.values


def _kill_hook():
    """Batches left before a simulated kill, or None (see KILL_HOOK_ENV)."""
    value = os.environ.get(KILL_HOOK_ENV)
    return int(value) if value else None


_BATCHES_DONE = itertools.count(1)


def _count_batch_and_maybe_die():
    """Counts a written batch; SIGKILLs this process when the test hook says."""
    done, limit = next(_BATCHES_DONE), _kill_hook()
    if limit is not None and done >= limit:
        os.kill(os.getpid(), signal.SIGKILL)


def write_part(path, teachers, loaders, meta, options, progress=True, lock=None):
    """Runs ``teachers`` over every split and writes the part file ``path``.

    Arguments
    ---------
    teachers : list of Teacher (mtkd.teachers), sorted by list index.
    loaders : {split: DataLoader} giving PaddedBatch with ``id``, ``sig`` and
        ``phn_encoded``.
    meta : dict, the part's metadata (``splits`` filled with manifest_info).
    options : StoreOptions.
    lock : PartLock held by the caller for ``path``, or None (taken here).
    Returns the path of the complete file.
    """
    writer = PartWriter(
        path, meta, [t.index for t in teachers], options, len(meta["labels"]), lock
    )
    try:
        with unraisable_disk_full() as disk_full:
            _write_splits(writer, path, teachers, loaders, options, progress, disk_full)
            path = writer.close(disk_full)
    except BaseException as err:
        failure = writer.fail(err)
        if failure is err:
            raise
        raise failure from None
    return path


def _write_splits(writer, path, teachers, loaders, options, progress, disk_full):
    """The body of ``write_part``: every split, batch by batch."""
    for split, loader in loaders.items():
        writer.begin_split(split, _att_rows(loader.dataset, len(teachers)))
        name = os.path.basename(path)
        for batch in tqdm(loader, desc=f"{name} {split}", disable=not progress):
            phns, phn_lens = batch.phn_encoded
            n = torch.round(phn_lens * phns.shape[1]).long()
            refs = [phns[b, : n[b]] for b in range(len(n))]
            wavs, wav_lens = batch.sig
            targets = teacher_targets(
                teachers,
                wavs,
                wav_lens,
                refs,
                options.temperature,
                options.keeps_posteriors,
            )
            writer.append(batch.id, targets)
            if disk_full:  # h5py could only print it: stop now
                raise disk_full[0]
            _count_batch_and_maybe_die()
        writer.end_split(split)


def _att_rows(dataset, n_teachers):
    """sum_u N * (L_u + 1) from the manifest's phones, or None if unknown."""
    try:
        return n_teachers * sum(
            len(dataset.data[i]["phn"].split()) + 1 for i in dataset.data_ids
        )
    except (AttributeError, KeyError):
        return None


def part_meta(teachers, settings, splits, list_file, list_size, options):
    """The metadata of a part about to be written."""
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


@dataclass
class PartPlan:
    """What a run has to write, and what it found already done."""

    todo: list  # [[teacher index, ...], ...]: one list per part to write
    done: dict  # {part file: [teacher index, ...]} reused as they are
    removed: list  # stale part files deleted (overwrite)
    warnings: list


def _teacher_differences(meta, indices, teacher_files, requested, checksum):
    """What differs between a part's teachers and the current list's lines.

    A requested teacher is compared by its files' checksum (a run moved to
    another folder still matches); the others by path only (cheap).
    """
    out = []
    for entry, k in zip(meta["teachers"], indices, strict=True):
        if k >= len(teacher_files):
            out.append(f"teacher {k} is not in the list any more")
        elif k in requested and entry["checksum"] != checksum(k):
            out.append(
                f"teacher {k} was {entry['path']} (checksum {entry['checksum'][:8]}),"
                f" the list now has {teacher_files[k].where} "
                f"(checksum {checksum(k)[:8]})"
            )
        elif k not in requested and entry["path"] != teacher_files[k].model_ckpt:
            out.append(
                f"teacher {k} was {entry['path']}, the list now has "
                f"{teacher_files[k].where}"
            )
    return out


def plan_parts(
    folder, teacher_files, requested, settings, checksum, overwrite=False, part_size=0
):
    """Decides which parts to write; complete matching parts are kept (resume).

    Arguments
    ---------
    folder : str, the store folder.
    teacher_files : list of TeacherFiles, the whole teacher list in order.
    requested : list of teacher indices (0-based) this run is for.
    settings : dict from ``store_settings`` for this run.
    checksum : callable, teacher index -> checksum of its files.
    overwrite : bool, replace complete parts that differ (else an error).
    part_size : int, teachers per part file (0: all in one file).

    A complete part that differs (settings, manifests or teachers) and holds a
    requested teacher stops the run unless ``overwrite``; one that holds none
    only gets a warning (another array task may still be writing its part).
    """
    requested = set(requested)
    plan = PartPlan([], {}, [], [])
    owner = {}
    for path in complete_part_files(folder):
        meta, indices = read_part_header(path)
        diff = settings_differences(meta["settings"], settings)
        diff += _teacher_differences(meta, indices, teacher_files, requested, checksum)
        mine = sorted(set(indices) & requested)
        if not diff:
            for k in indices:
                if k in owner:
                    raise StoreError(
                        f"Teacher {k} is in two parts: {owner[k]} and {path}; "
                        "remove one of them."
                    )
                owner[k] = path
            plan.done[path] = mine
        elif not mine:
            plan.warnings.append(
                f"{path} differs from this run ({'; '.join(diff)}); the store "
                f"cannot be read until its teachers {indices} are written again "
                "(--overwrite True)."
            )
        elif overwrite:
            os.remove(path)
            plan.removed.append(path)
            others = sorted(set(indices) - requested)
            if others:
                plan.warnings.append(
                    f"Removed {path}, which also held teachers {others}: write "
                    "them again."
                )
        else:
            raise StoreError(
                f"{path} already holds teachers {mine}, made differently: "
                f"{'; '.join(diff)}. Use `--overwrite True` to replace it, or "
                "another `--store_folder`."
            )
    todo = sorted(requested - set(owner))
    size = part_size if part_size and part_size > 0 else max(len(todo), 1)
    plan.todo = [todo[i : i + size] for i in range(0, len(todo), size)]
    return plan


def select_teachers(n_teachers, teacher_index=None, teacher_indices=None):
    """The teacher indices a run is for: one, a subset, or all (0-based)."""
    if teacher_index is not None and teacher_indices is not None:
        raise StoreError("Give teacher_index or teacher_indices, not both.")
    if teacher_index is not None:
        chosen = [teacher_index]
    elif teacher_indices is not None:
        chosen = list(teacher_indices)
    else:
        return list(range(n_teachers))
    bad = [k for k in chosen if not isinstance(k, int) or not 0 <= k < n_teachers]
    if bad or not chosen:
        raise StoreError(
            f"Teacher indices {bad or chosen} are not in 0..{n_teachers - 1} (the "
            f"list has {n_teachers} teachers; indices are 0-based list positions)."
        )
    return sorted(set(chosen))


# --------------------------------------------------------------------------
# Reading


class TeacherStore:
    """Reads a store (a folder of parts, or one part file) by utterance ID.

    Arguments
    ---------
    path : str
        A store folder (every complete ``*.h5`` in it is a part) or one file.
    allow_missing : bool
        Read even when some teachers of the list have no part yet (otherwise
        an error names them).

    The per-utterance arrays and the (small) CTC hypotheses are read into
    memory at construction; ``get`` then reads one slice of distributions per
    part file. The HDF5 files are opened lazily, once per process, so a store
    made before a DataLoader's workers fork (or are spawned) is safe to use
    inside them.
    """

    def __init__(self, path, allow_missing=False):
        self.path = os.path.abspath(path)
        self.files = self._part_paths(self.path)
        headers = [read_part_header(p) for p in self.files]
        self.meta = headers[0][0]
        self._check_parts_agree(headers)
        self._order_teachers(headers, allow_missing)
        self._index = {s: self._read_index(s) for s in self.splits}
        self._pid = None
        self._handles = {}
        self._inherited = []

    # ------------------------------------------------------------ opening
    @staticmethod
    def _part_paths(path):
        if os.path.isfile(path):
            return [path]
        if not os.path.isdir(path):
            raise StoreError(f"No teacher store at {path} (no such file or folder).")
        files = complete_part_files(path)
        if not files:
            partial = glob.glob(os.path.join(glob.escape(path), "*" + PARTIAL_SUFFIX))
            hint = f" (unfinished: {', '.join(partial)})" if partial else ""
            raise StoreError(
                f"{path} holds no complete part file{hint}: run save_teachers.py."
            )
        return files

    def _check_parts_agree(self, headers):
        first = headers[0][0]["settings"]
        for (meta, _), path in zip(headers[1:], self.files[1:], strict=True):
            diff = settings_differences(first, meta["settings"])
            if diff:
                raise StoreError(
                    f"Parts of {self.path} disagree: {self.files[0]} and {path} "
                    f"differ in {'; '.join(diff)}. Rewrite the stale part(s) with "
                    "save_teachers.py (--overwrite True), or remove them."
                )

    def _order_teachers(self, headers, allow_missing):
        """Teachers of all parts sorted by list index: (part, slot) per teacher."""
        owner = {}
        for p, (meta, indices) in enumerate(headers):
            for slot, index in enumerate(indices):
                if index in owner:
                    other = self.files[owner[index][0]]
                    raise StoreError(
                        f"Teacher {index} is in two parts: {other} and "
                        f"{self.files[p]}. Remove one of them."
                    )
                owner[index] = (p, slot, meta["teachers"][slot])
        self.teacher_indices = sorted(owner)
        self.teachers = [owner[i][2] for i in self.teacher_indices]
        list_size = max(meta["list_size"] for meta, _ in headers)
        self.missing_teachers = sorted(set(range(list_size)) - set(owner))
        if self.missing_teachers and not allow_missing:
            folder = glob.escape(os.path.dirname(self.files[0]))
            partial = glob.glob(os.path.join(folder, "*" + PARTIAL_SUFFIX))
            hint = f" Unfinished parts: {', '.join(partial)}." if partial else ""
            raise StoreError(
                f"{self.path} lacks teachers {self.missing_teachers} of its list "
                f"({list_size} teachers): their parts are not written or not "
                f"finished.{hint} Run save_teachers.py for them (a killed run "
                "resumes when run again)."
            )
        # Per part, in the part's own teacher order: positions in the store.
        position = {index: k for k, index in enumerate(self.teacher_indices)}
        self._part_slots = [[position[i] for i in ind] for _, ind in headers]

    def _read_index(self, split):
        """Loads one split's small arrays of every part; aligns utterances."""
        parts = []
        with_posteriors = self.meta["settings"]["store_ctc_posteriors"]
        names = ["ref_lens", "att_offsets", "ctc_offsets", "ctc_lens"]
        names += ["ctc_per", "att_per", "ctc_edits", "att_edits", "ctc_hyps"]
        if with_posteriors or self.meta["settings"]["store_topk"]:
            names += ["post_offsets", "post_frames"]
        for path in self.files:
            parts.append(_read_split_index(path, split, names, self.meta))
        utt_ids = parts[0]["utt_ids"]
        rows = {u: i for i, u in enumerate(utt_ids)}
        for part, path in zip(parts, self.files, strict=True):
            if set(part["utt_ids"]) != set(rows):
                missing = sorted(set(rows) - set(part["utt_ids"]))[:3]
                extra = sorted(set(part["utt_ids"]) - set(rows))[:3]
                raise StoreError(
                    f"Parts disagree on the {split} utterances: {self.files[0]} "
                    f"and {path} (e.g. only in the first: {missing}, only in the "
                    f"second: {extra}). Rewrite the stale part."
                )
            # Row of each utterance (in the first part's order) in this part.
            own = {u: r for r, u in enumerate(part["utt_ids"])}
            part["row"] = np.asarray([own[u] for u in utt_ids], dtype=np.int64)
        return {"utt_ids": utt_ids, "rows": rows, "parts": parts}

    def _file(self, p):
        """Part ``p``'s h5py handle, opened once per process."""
        if self._pid != os.getpid():
            # Handles inherited through fork are never used (nor closed) here.
            self._inherited.append(self._handles)
            self._handles = {}
            self._pid = os.getpid()
        if p not in self._handles:
            self._handles[p] = h5py.File(self.files[p], "r")
        return self._handles[p]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_handles={}, _inherited=[], _pid=None)
        return state

    def close(self):
        """Closes this process's handles (they reopen on the next ``get``)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}

    # ------------------------------------------------------------ metadata
    @property
    def teacher_count(self):
        """N, the number of teachers in the store."""
        return len(self.teacher_indices)

    @property
    def settings(self):
        return self.meta["settings"]

    @property
    def label_encoder_labels(self):
        """The shared labels: ``labels[i]`` is label id i (ind2lab)."""
        return list(self.settings["labels"])

    @property
    def blank_index(self):
        return self.settings["blank_index"]

    @property
    def bos_index(self):
        return self.settings["bos_index"]

    @property
    def eos_index(self):
        return self.settings["eos_index"]

    @property
    def temperature(self):
        return self.settings["temperature"]

    @property
    def splits(self):
        return list(self.meta["splits"])

    @property
    def teacher_paths(self):
        """model.ckpt path of each teacher, in store order (list index order)."""
        return [t["path"] for t in self.teachers]

    def utterance_ids(self, split):
        """The utterance IDs of ``split`` (manifest keys), in stored order."""
        return list(self._index[split]["utt_ids"])

    def __contains__(self, key):
        split, utt_id = key
        return utt_id in self._index[split]["rows"]

    def fingerprint(self, split):
        """sha256 of the split's manifest (see ``manifest_info``)."""
        return self.settings["fingerprints"][split]

    def check_manifest(self, split, json_path):
        """Raises unless ``json_path`` has the utterances and phones of the store,
        and the store really holds every one of its utterances (the stored
        fingerprint alone does not show rows lost from a damaged file)."""
        if manifest_info(json_path)["fingerprint"] != self.fingerprint(split):
            raise StoreError(
                f"{json_path} does not match the {split} manifest the store "
                f"{self.path} was made from (utterances or phones differ): "
                "use the same corpus and phn_set, or remake the store."
            )
        with open(json_path, encoding="utf-8") as f:
            wanted = json.load(f)
        self.check_holds(split, wanted)

    def check_holds(self, split, utt_ids):
        """Raises a StoreError naming the store's file(s) and the first missing
        IDs unless every utterance of ``utt_ids`` is in ``split``."""
        if split not in self._index:
            raise StoreError(f"{self.path} has no {split!r} split.")
        held = self._index[split]["rows"]
        missing = [u for u in utt_ids if u not in held]
        if missing:
            files = ", ".join(self.files)
            raise StoreError(
                f"The teacher store ({files}) lacks {len(missing)} {split} "
                f"utterance(s) of this run's manifest, e.g. {', '.join(missing[:5])}."
                " The store is damaged: write it again with save_teachers.py "
                "(--overwrite True), or restore it."
            )

    def corpus_per(self, split):
        """{"ctc": [N], "att": [N]} corpus-level PER (%) of each teacher."""
        index = self._index[split]
        phones = max(int(index["parts"][0]["ref_lens"].sum()), 1)
        out = {}
        for kind in ("ctc", "att"):
            edits = np.zeros(self.teacher_count)
            for part, slots in zip(index["parts"], self._part_slots, strict=True):
                edits[slots] = part[f"{kind}_edits"].sum(axis=0)
            out[kind] = [float(x) for x in 100.0 * edits / phones]
        return out

    def edit_counts(self, split, utt_id):
        """{"ctc": [N], "att": [N]} uncapped edit counts of one utterance."""
        index = self._index[split]
        i = index["rows"][utt_id]
        out = {"ctc": np.zeros(self.teacher_count, np.int64)}
        out["att"] = out["ctc"].copy()
        for part, slots in zip(index["parts"], self._part_slots, strict=True):
            for kind in ("ctc", "att"):
                out[kind][slots] = part[f"{kind}_edits"][part["row"][i]]
        return out

    # ------------------------------------------------------------ targets
    def get(self, split, utt_id):
        """All teachers' targets for one utterance.

        Returns a dict (N teachers in list order, L reference phones, V labels):
        ``ctc_hyps`` list of N [H_k] int64 greedy CTC hypotheses;
        ``ctc_hyp_lens`` [N] int64; ``att_dist`` [N, L+1, V] float32
        teacher-forced distributions; ``ctc_per`` / ``att_per`` [N] float32
        per-utterance PER in percent; ``ref_len`` int L; and, when stored,
        ``ctc_log_post`` (list of N [T'_k, V] float32) or ``topk_ids`` /
        ``topk_log_post`` (lists of N [T'_k, K]).
        """
        index = self._index[split]
        try:
            i = index["rows"][utt_id]
        except KeyError:
            raise KeyError(
                f"{utt_id!r} is not in the {split} split of the store"
            ) from None
        n, v = self.teacher_count, len(self.settings["labels"])
        ref_len = int(index["parts"][0]["ref_lens"][i])
        att, hyps = [None] * n, [None] * n
        ctc_per, att_per = np.zeros(n, np.float32), np.zeros(n, np.float32)
        extras = {}
        for p, (part, slots) in enumerate(
            zip(index["parts"], self._part_slots, strict=True)
        ):
            row = part["row"][i]
            g = self._file(p)[split]
            # The one HDF5 read: this part's distributions of the utterance.
            start = part["att_offsets"][row]
            block = g["att_dist"][start : start + len(slots) * (ref_len + 1)]
            block = torch.from_numpy(block.astype(np.float32))
            block = block.view(len(slots), ref_len + 1, v)
            start, lens = part["ctc_offsets"][row], part["ctc_lens"][row]
            flat = part["ctc_hyps"][start : start + lens.sum()].astype(np.int64)
            pieces = torch.split(torch.from_numpy(flat), lens.tolist())
            for j, slot in enumerate(slots):
                att[slot], hyps[slot] = block[j], pieces[j]
            ctc_per[slots] = part["ctc_per"][row]
            att_per[slots] = part["att_per"][row]
            self._get_posteriors(g, part, row, slots, extras)
        return {
            "ctc_hyps": hyps,
            "ctc_hyp_lens": torch.tensor([len(h) for h in hyps], dtype=torch.long),
            "att_dist": torch.stack(att),
            "ctc_per": torch.from_numpy(ctc_per),
            "att_per": torch.from_numpy(att_per),
            "ref_len": ref_len,
            **extras,
        }

    def _get_posteriors(self, g, part, row, slots, extras):
        """Adds the optional per-frame outputs of one part to ``extras``."""
        if "post_offsets" not in part:
            return
        frames = part["post_frames"][row]
        start = part["post_offsets"][row]
        stop = start + frames.sum()
        for name in ("ctc_log_post", "topk_ids", "topk_log_post"):
            if name not in g:
                continue
            values = g[name][start:stop]
            dtype = np.int64 if name == "topk_ids" else np.float32
            flat = torch.from_numpy(values.astype(dtype))
            out = extras.setdefault(name, [None] * self.teacher_count)
            pieces = torch.split(flat, frames.tolist())
            for slot, piece in zip(slots, pieces, strict=True):
                out[slot] = piece

    # ------------------------------------------------------------ summary
    def summary(self):
        """A JSON-able summary: teachers, splits, counts, PERs, bytes on disk."""
        files = [{"file": p, "bytes": os.path.getsize(p)} for p in self.files]
        splits = {}
        for split in self.splits:
            info = self.meta["splits"][split]
            per = self.corpus_per(split)
            splits[split] = {
                "n_utt": len(self._index[split]["utt_ids"]),
                "hours": info.get("hours"),
                "fingerprint": self.fingerprint(split),
                "per": [
                    {"teacher": k, "ctc_per": c, "att_per": a}
                    for k, c, a in zip(
                        self.teacher_indices, per["ctc"], per["att"], strict=True
                    )
                ],
            }
        return {
            "store": self.path,
            "teachers": [
                {"index": k, "path": t["path"]}
                for k, t in zip(self.teacher_indices, self.teachers, strict=True)
            ],
            "missing_teachers": self.missing_teachers,
            "settings": {k: v for k, v in self.settings.items() if k != "labels"},
            "labels": self.label_encoder_labels,
            "splits": splits,
            "files": files,
            "bytes": sum(f["bytes"] for f in files),
        }


def _read_split_index(path, split, names, meta):
    """One part's per-utterance arrays of ``split``, checked for completeness.

    A damaged store (a split group, a dataset or rows missing) is a StoreError
    naming the file and what is missing, here at start-up rather than an h5py
    KeyError inside a data-loading worker mid-epoch.
    """
    fix = (
        "The store is damaged: write this part again with save_teachers.py "
        "(--overwrite True), or restore the file."
    )
    with h5py.File(path, "r") as f:
        if split not in f:
            raise StoreError(f"{path} has no {split!r} group. {fix}")
        g = f[split]
        wanted = [*names, "utt_ids", "att_dist"]
        if meta["settings"]["store_ctc_posteriors"]:
            wanted.append("ctc_log_post")
        if meta["settings"]["store_topk"]:
            wanted += ["topk_ids", "topk_log_post"]
        missing = [n for n in wanted if n not in g]
        if missing:
            raise StoreError(
                f"{path} lacks the dataset(s) {', '.join(missing)} of the "
                f"{split!r} split. {fix}"
            )
        part = {n: g[n][()] for n in names}
        part["utt_ids"] = [u.decode() for u in g["utt_ids"][()]]
        att_rows = g["att_dist"].shape[0]
    n_utt = len(part["utt_ids"])
    short = [n for n in names if n != "ctc_hyps" and len(part[n]) != n_utt]
    if short:
        raise StoreError(
            f"{path}: in the {split!r} split, {', '.join(short)} do not have one "
            f"row per utterance ({n_utt} utterance IDs). {fix}"
        )
    if n_utt:
        n_teachers = part["ctc_lens"].shape[1] if part["ctc_lens"].ndim == 2 else 1
        ends = part["att_offsets"] + n_teachers * (part["ref_lens"] + 1)
        hyp_ends = part["ctc_offsets"] + part["ctc_lens"].reshape(n_utt, -1).sum(1)
        if int(ends.max()) > att_rows or int(hyp_ends.max()) > len(part["ctc_hyps"]):
            raise StoreError(
                f"{path}: the {split!r} split's att_dist or ctc_hyps is shorter "
                f"than its index says (cut off). {fix}"
            )
    return part


def collate_teacher_targets(items):
    """Pads a batch of ``TeacherStore.get`` results into tensors.

    Returns (B utterances, N teachers): ``ctc_hyps`` [B, N, Hmax] int64 (pad
    0), ``ctc_hyp_lens`` [B, N] int64, ``att_dist`` [B, N, Lmax+1, V] float32
    (pad 0), ``att_lens`` [B] int64 (L_b + 1), ``ctc_per`` / ``att_per``
    [B, N] float32 (percent).
    """
    b, n = len(items), len(items[0]["ctc_hyps"])
    v = items[0]["att_dist"].shape[-1]
    h_max = max(1, max(int(it["ctc_hyp_lens"].max()) for it in items))
    l_max = max(it["att_dist"].shape[1] for it in items)
    hyps = torch.zeros(b, n, h_max, dtype=torch.long)
    att = torch.zeros(b, n, l_max, v)
    for i, item in enumerate(items):
        for k, hyp in enumerate(item["ctc_hyps"]):
            hyps[i, k, : len(hyp)] = hyp
        att[i, :, : item["att_dist"].shape[1]] = item["att_dist"]
    return {
        "ctc_hyps": hyps,
        "ctc_hyp_lens": torch.stack([it["ctc_hyp_lens"] for it in items]),
        "att_dist": att,
        "att_lens": torch.tensor([it["att_dist"].shape[1] for it in items]),
        "ctc_per": torch.stack([it["ctc_per"] for it in items]),
        "att_per": torch.stack([it["att_per"] for it in items]),
    }


# --------------------------------------------------------------------------
# Summary and merge


def format_summary(summary):
    """The store summary as a few readable lines (for the log and stdout)."""
    lines = [f"Teacher store {summary['store']}: {summary['bytes'] / 1e6:.2f} MB"]
    for t in summary["teachers"]:
        lines.append(f"  teacher {t['index']}: {t['path']}")
    if summary["missing_teachers"]:
        lines.append(f"  missing teachers: {summary['missing_teachers']}")
    for split, info in summary["splits"].items():
        hours = info["hours"] or 0.0
        lines.append(f"  {split}: {info['n_utt']} utterances, {hours:.3f} h")
        for p in info["per"]:
            lines.append(
                f"    teacher {p['teacher']}: CTC PER {p['ctc_per']:.2f}  "
                f"attention PER (teacher-forced) {p['att_per']:.2f}"
            )
    return "\n".join(lines)


def write_summary(store, path):
    """Writes ``store.summary()`` to ``path`` (JSON, atomically); returns it."""
    summary = store.summary()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)
    return summary


def _stored_targets(store, split, utt_id):
    """One utterance's targets as writer input (N UttTargets), for merging."""
    got = store.get(split, utt_id)
    edits = store.edit_counts(split, utt_id)
    out = []
    for k in range(store.teacher_count):
        extra = {
            name: got[name][k]
            for name in ("ctc_log_post", "topk_ids", "topk_log_post")
            if name in got
        }
        out.append(
            UttTargets(
                ctc_hyp=got["ctc_hyps"][k],
                att_dist=got["att_dist"][k],
                ctc_per=float(got["ctc_per"][k]),
                att_per=float(got["att_per"][k]),
                ctc_edits=int(edits["ctc"][k]),
                att_edits=int(edits["att"][k]),
                **extra,
            )
        )
    return out


def merge_store(folder, path, progress=True):
    """Writes every part of the store ``folder`` into one file ``path``.

    Reading the merged file costs one slice per dataset per utterance whatever
    the number of teachers. ``path`` must lie outside ``folder``.
    """
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(folder):
        raise StoreError(
            f"The merged file {path} must not be inside the store folder "
            f"{folder} (it would be read as one more part)."
        )
    store = TeacherStore(folder)
    s = store.settings
    options = StoreOptions(
        s["temperature"],
        s["att_dist_dtype"],
        s["store_ctc_posteriors"],
        s["store_topk"],
        store.meta["options"].get("compression"),
    )
    meta = dict(store.meta, teachers=store.teachers, merged_from=store.files)
    meta["list_size"] = max(store.teacher_indices) + 1
    meta["splits"] = {k: dict(v) for k, v in store.meta["splits"].items()}
    writer = PartWriter(path, meta, store.teacher_indices, options, len(s["labels"]))
    try:
        with unraisable_disk_full() as disk_full:
            for split in store.splits:
                ref_lens = store._index[split]["parts"][0]["ref_lens"]
                rows = int((ref_lens + 1).sum()) * store.teacher_count
                writer.begin_split(split, rows)
                for utt_id in tqdm(store.utterance_ids(split), disable=not progress):
                    writer.append([utt_id], [_stored_targets(store, split, utt_id)])
                    if disk_full:
                        raise disk_full[0]
                writer.end_split(split)
            return writer.close(disk_full)
    except BaseException as err:
        failure = writer.fail(err)
        if failure is err:
            raise
        raise failure from None
