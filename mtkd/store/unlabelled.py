"""Writing the unlabelled part: every teacher on audio without transcripts.

No reference says which teacher is right on such audio, so each utterance's
pseudo-reference is the teachers' consensus (``mtkd.consensus``): the medoid
of their greedy CTC hypotheses. Every teacher's decoder is teacher-forced on
it and its PERs are measured against it, so the stored targets are aligned
for the student's decoder and ``best`` / ``weighted`` / ``top-k`` rank the
teachers by their error rate against the consensus.

The consensus needs every teacher's hypothesis of the same utterance, so the
part holds every teacher of the list and is written by one run that loads
them all (``teacher_index`` array tasks leave it to that run). Each batch
goes through every encoder once; the decoders are teacher-forced from the
same encoder outputs (``consensus_targets``), so an hour of unlabelled audio
costs what an hour of labelled audio does, plus the edit distances.

The part is ``unlabelled-t000-tNNN.h5`` beside the labelled parts, with the
same layout and one split, ``unlabelled``, which adds ``consensus_teacher``
[U] int32: the teacher whose hypothesis is the pseudo-reference (its stored
CTC hypothesis *is* the reference; ``TeacherStore.pseudo_reference``), and
(format version 3) each teacher's leave-one-out reference and PERs and each
utterance's disagreement (``mtkd.consensus.unlabelled_scores``). Ties between
equally central hypotheses go to the teacher with the lower greedy CTC PER on
valid, read from the labelled parts' metadata (written first, by the same
run) and recorded in the part's ``tie_break``.
"""

import contextlib
import logging
import os

from tqdm import tqdm

from mtkd.store.format import (
    FORMAT_VERSION,
    UNLABELLED,
    StoreError,
    StoreOptions,
    complete_part_files,
    manifest_info,
    part_meta,
    read_part_header,
    remove_part,
    settings_differences,
    store_settings,
    unlabelled_part_files,
    unlabelled_part_path,
)
from mtkd.store.writer import PartLock, PartWriter, teacher_differences
from mtkd.teachers import consensus_targets, teacher_checksum

logger = logging.getLogger(__name__)


def write_unlabelled_part(
    folder,
    list_file,
    teacher_files,
    manifest,
    loader,
    load_teacher,
    *,
    temperature=1.0,
    att_dist_dtype="float16",
    compression=None,
    overwrite=False,
    autocast=contextlib.nullcontext,
    progress=True,
    source=None,
):
    """Writes the store's unlabelled part unless a matching one is complete.

    Arguments
    ---------
    folder, list_file, teacher_files : as ``write_store``.
    manifest : str, the unlabelled manifest (``unlabelled_prepare.py``).
    loader : DataLoader of that manifest giving ``id`` and ``sig``.
    load_teacher : callable, list index k -> Teacher.
    overwrite : bool, replace a complete part made differently.
    source : str, the ``--unlabelled`` it was made from (recorded in the
        part's split info, so that a student given another pool is told).

    Returns the part's path.
    """
    options = StoreOptions(temperature, att_dist_dtype, compression)
    splits = {UNLABELLED: manifest_info(manifest)}
    if source is not None:
        splits[UNLABELLED]["source"] = str(source)
    first = teacher_files[0]
    settings = store_settings(first.labels, first.special_indices, options, splits)
    everyone = list(range(len(teacher_files)))
    path = unlabelled_part_path(folder, len(teacher_files))
    priority = valid_ctc_per(folder, len(teacher_files))
    for old in unlabelled_part_files(folder):
        meta, indices = read_part_header(old)
        diff = settings_differences(meta["settings"], settings)
        version = meta.get("format_version", 1)
        if version < FORMAT_VERSION:
            diff.append(
                f"format version {version}, without leave-one-out scores and "
                "disagreement"
            )
        if indices != everyone:
            diff.append(f"it holds teachers {indices}, the list has {everyone}")
        else:
            diff += teacher_differences(
                meta, indices, teacher_files, set(everyone),
                lambda k: teacher_checksum(teacher_files[k]),
            )  # fmt: skip
        if not diff and old == path:
            logger.info("Skipping the unlabelled part: %s is complete", path)
            return path
        if not overwrite:
            raise StoreError(
                f"{old} holds the unlabelled split made differently: "
                f"{'; '.join(diff) or 'another teacher count'}. Use `--overwrite "
                "True` to replace it, or another `--store_folder`."
            )
        remove_part(old)
    with PartLock(path) as lock:
        if os.path.exists(path):  # another run finished it meanwhile
            return path
        teachers = [load_teacher(k) for k in everyone]
        meta = part_meta(
            teachers, settings, splits, list_file, len(teacher_files), options
        )
        meta["kind"] = UNLABELLED
        meta["tie_break"] = {"valid_ctc_per": priority}
        logger.info("Writing the unlabelled split of teachers %s to %s", everyone, path)
        writer = PartWriter(path, meta, everyone, options, len(meta["labels"]), lock)
        return writer.write(
            lambda disk_full: _write(
                writer, path, teachers, loader, options, progress, disk_full,
                autocast, priority,
            )
        )  # fmt: skip


def valid_ctc_per(folder, n_teachers):
    """[N] floats: each teacher's corpus-level greedy CTC PER on valid (%),
    from the metadata of the store's complete labelled parts (the tie-break
    of the consensus). A teacher without a labelled part is a StoreError."""
    found = {}
    for path in complete_part_files(folder):
        meta, indices = read_part_header(path)
        per = meta["splits"].get("valid", {}).get("per", {}).get("ctc", [])
        found.update(zip(indices, per, strict=False))
    missing = [k for k in range(n_teachers) if k not in found]
    if missing:
        raise StoreError(
            f"{folder} has no labelled part with the valid PER of teachers "
            f"{missing}: the unlabelled part breaks ties between teachers by it. "
            "Run save_teachers.py without --teacher_index first (it writes the "
            "labelled parts, then the unlabelled one)."
        )
    return [float(found[k]) for k in range(n_teachers)]


def _write(
    writer, path, teachers, loader, options, progress, disk_full, autocast, priority
):
    writer.begin_split(UNLABELLED)
    name = os.path.basename(path)
    for batch in tqdm(loader, desc=f"{name} {UNLABELLED}", disable=not progress):
        wavs, wav_lens = batch.sig
        with autocast():
            targets, scores = consensus_targets(
                teachers, wavs, wav_lens, options.temperature, priority
            )
        writer.append(batch.id, targets, scores)
        if disk_full:  # h5py could only print it: stop now
            raise disk_full[0]
    writer.end_split(UNLABELLED)
