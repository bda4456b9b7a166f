"""Writing a teacher store: which parts to write, and writing them.

``write_store`` is what stage 2 calls: it plans the parts (complete matching
parts are reused, so a killed run resumes), claims them against concurrent
writers (``PartLock``), runs each part's teachers over every split and writes
the part (``write_part``) as ``NAME.h5.partial``, renamed when complete.
"""

import contextlib
import json
import logging
import os
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from tqdm import tqdm

from mtkd.cluster import raise_if_interrupted
from mtkd.disk import (
    DiskFullError,
    disk_full_error,
    free_bytes,
    is_disk_full,
    unraisable_disk_full,
)
from mtkd.locks import SingleWriterLock
from mtkd.store.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_ARRAYS,
    PARTIAL_SUFFIX,
    UNLABELLED_ARRAYS,
    StoreError,
    StoreOptions,
    complete_part_files,
    manifest_info,
    part_meta,
    part_path,
    read_part_header,
    remove_part,
    settings_differences,
    store_settings,
    write_part_checksum,
)
from mtkd.teachers import teacher_checksum, teacher_targets

logger = logging.getLogger(__name__)

# Free space a part writer keeps beyond each batch (see PartWriter.check_space).
SPACE_MARGIN_BYTES = 16 << 20


# --------------------------------------------------------------------------
# The facade


def write_store(
    folder,
    list_file,
    teacher_files,
    manifests,
    loaders,
    load_teacher,
    *,
    temperature=1.0,
    att_dist_dtype="float16",
    compression=None,
    teacher_index=None,
    teacher_indices=None,
    teachers_per_part=0,
    overwrite=False,
    autocast=contextlib.nullcontext,
    progress=True,
):
    """Writes the parts of the store ``folder`` that are not complete yet.

    Arguments
    ---------
    folder : str, the store folder.
    list_file : str, the teacher list file (recorded in every part).
    teacher_files : list of TeacherFiles, every line of the list, checked.
    manifests : {split: manifest JSON path}.
    loaders : {split: DataLoader} giving PaddedBatch with ``id``, ``sig`` and
        ``phn_encoded`` (any batch size and order).
    load_teacher : callable, list index k -> Teacher, ready on its device.
    temperature, att_dist_dtype, compression : what the targets are made of
        (see ``StoreOptions``).
    teacher_index, teacher_indices : the teachers of this run (default: all).
    teachers_per_part : int, teachers per part file (0: all in one file).
    overwrite : bool, replace complete parts that differ (else an error).
    autocast : callable returning the context the teachers run in.

    Returns the ``PartPlan`` it followed.
    """
    options = StoreOptions(temperature, att_dist_dtype, compression)
    splits = {split: manifest_info(path) for split, path in manifests.items()}
    first = teacher_files[0]
    settings = store_settings(first.labels, first.special_indices, options, splits)
    plan = plan_parts(
        folder,
        teacher_files,
        select_teachers(len(teacher_files), teacher_index, teacher_indices),
        settings,
        checksum=lambda k: teacher_checksum(teacher_files[k]),
        overwrite=overwrite,
        part_size=teachers_per_part,
    )
    for path, indices in plan.done.items():
        if indices:
            logger.info("Skipping teachers %s: %s is complete", indices, path)
    for warning in plan.warnings:
        logger.warning(warning)
    # Another run writing one of these parts stops this one here (PartLock).
    locks = claim_parts(folder, plan.todo)
    try:
        for indices in plan.todo:
            path = part_path(folder, indices)
            if os.path.exists(path):  # finished by another run since planning
                logger.info("Skipping teachers %s: %s is complete", indices, path)
                continue
            teachers = [load_teacher(k) for k in indices]
            meta = part_meta(
                teachers, settings, splits, list_file, len(teacher_files), options
            )
            logger.info("Writing teachers %s to %s", indices, path)
            with autocast():
                write_part(
                    path, teachers, loaders, meta, options, progress,
                    lock=locks[tuple(indices)],
                )  # fmt: skip
            del teachers  # free them before the next part's teachers are loaded
    finally:
        for lock in locks.values():
            lock.release()
    return plan


# --------------------------------------------------------------------------
# Planning


@dataclass
class PartPlan:
    """What a run has to write, and what it found already done."""

    todo: list  # [[teacher index, ...], ...]: one list per part to write
    done: dict  # {part file: [teacher index, ...]} reused as they are
    removed: list  # stale part files deleted (overwrite)
    warnings: list


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


def teacher_differences(meta, indices, teacher_files, requested, checksum):
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
        diff += teacher_differences(meta, indices, teacher_files, requested, checksum)
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
            remove_part(path)
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


# --------------------------------------------------------------------------
# Claiming a part
class PartLock(SingleWriterLock):
    """One process's exclusive claim on writing one part file.

    The claim is an ``flock`` on ``PART.h5.lock`` (``mtkd.locks``), taken
    before the ``.partial`` file is opened: a second writer of the same part
    (the same command run twice, or two runs sharing a ``store_folder``) is
    refused with the first writer's pid, host and command before it touches
    anything, and the first finishes. The kernel drops the lock when its
    process dies (kill -9 included), so a killed writer never blocks the next
    run.
    """

    SUFFIX = ".lock"

    def __init__(self, path):
        super().__init__(path + self.SUFFIX)
        self.path = path

    def held_error(self, owner):
        return StoreError(
            f"{self.path} is being written by another run ({owner}; lock "
            f"file {self.lock_path}). "
            "Two writers of one part would destroy each other's work: wait "
            "for that run to finish (its part is then reused), or stop it "
            "and run this command again."
        )


def claim_parts(folder, todo):
    """Locks the part file of every teacher group in ``todo`` (see PartLock).

    Returns {teacher group (tuple): PartLock}; all or none: when one part is
    held by another run, the locks taken so far are released and its
    StoreError is raised, before anything is written.
    """
    locks = {}
    try:
        for indices in todo:
            path = part_path(folder, indices)
            locks[tuple(indices)] = PartLock(path).acquire()
    except BaseException:
        for lock in locks.values():
            lock.release()
        raise
    return locks


# --------------------------------------------------------------------------
# Writing a part
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


class PartWriter:
    """Writes one part file: ``begin_split`` / ``append`` ... / ``end_split``,
    then ``close``.

    The file is ``path + ".partial"`` until ``close`` renames it to ``path``.
    The large arrays (distributions, hypotheses) are appended batch
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
        self.group = g
        self.att_filled = 0
        self.hyps = []
        self.rows = {"utt_ids": []}
        for name, _, _ in INDEX_ARRAYS:
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
        free = free_bytes(self.partial)
        if free is not None and free < 2 * needed + SPACE_MARGIN_BYTES:
            raise disk_full_error(self.partial, "the teacher store part")

    def append(self, utt_ids, targets, scores=None):
        """Appends a batch: ``targets[b][k]`` is teacher k's UttTargets for b;
        ``scores`` (unlabelled split) {name: [B] or [B, N] values} of
        ``UNLABELLED_ARRAYS`` (``consensus_targets``' scores)."""
        raise_if_interrupted()  # a Ctrl-C lost in a finaliser stops here
        self.check_space(targets)
        rows = self.rows
        for name, _, _ in UNLABELLED_ARRAYS if scores is not None else ():
            rows.setdefault(name, []).extend(list(scores[name]))
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
        for name, dtype, per_teacher in INDEX_ARRAYS:
            values = np.asarray(rows[name], dtype=dtype)
            if per_teacher:
                values = values.reshape(-1, self.n_teachers)
            g.create_dataset(name, data=values)
        for name, dtype, per_teacher in UNLABELLED_ARRAYS:
            if name in rows:
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

    def write(self, body):
        """Runs ``body(disk_full)``, which fills the part, then ``close``.

        ``disk_full`` is the list of h5py's unprintable write errors
        (``unraisable_disk_full``); ``body`` should raise its first one after
        each batch. On any failure the ``.partial`` file is dropped and the
        error raised again (a DiskFullError naming the part when the disk is
        full). Returns the complete part's path.
        """
        try:
            with unraisable_disk_full() as disk_full:
                body(disk_full)
                return self.close(disk_full)
        except BaseException as err:
            failure = self.fail(err)
            if failure is err:
                raise
            raise failure from None

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
        write_part_checksum(self.partial, self.path)
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
    return writer.write(
        lambda disk_full: _write_splits(
            writer, path, teachers, loaders, options, progress, disk_full
        )
    )


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
                teachers, wavs, wav_lens, refs, options.temperature
            )
            writer.append(batch.id, targets)
            if disk_full:  # h5py could only print it: stop now
                raise disk_full[0]
        writer.end_split(split)


def _att_rows(dataset, n_teachers):
    """sum_u N * (L_u + 1) from the manifest's phones, or None if unknown."""
    try:
        return n_teachers * sum(
            len(dataset.data[i]["phn"].split()) + 1 for i in dataset.data_ids
        )
    except (AttributeError, KeyError):
        return None
