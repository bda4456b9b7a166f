#!/usr/bin/env python3
"""Stage 2: run every teacher once and store what distillation needs.

    python save_teachers.py hparams/save_teachers.yaml --data_folder /path/to/TIMIT \
        --tea_models_dir teachers.txt --output_folder results/store

For every teacher of the list file and every utterance of train, valid and
test, the store keeps the greedy CTC hypothesis, the teacher-forced attention
distributions and both per-utterance PERs, keyed by utterance ID: the student
(stage 3) reads them with any batch size or order and never runs a teacher.

``--teacher_index K`` (one SLURM array task per teacher) or ``--teacher_indices
"[0,3]"`` writes only those teachers' part; parts already complete are skipped,
so a killed run resumes when the same command is run again. The store summary
(teachers, utterances, PERs, bytes) is printed and written to ``summary_file``.

``--precision fp16`` (GPU) or ``bf16`` runs the teachers under
``torch.autocast``; the store holds float16 distributions either way. SIGUSR1 or
SIGTERM (SLURM, see ``slurm/``) drops the part being written and exits with
status 75; the same command writes it again.

Authors: the project's engineers (after Gao, Parcollet & Lane, 2020).
"""

import logging
import os
import sys

import speechbrain as sb

from mtkd import cluster
from mtkd.data import SPLITS, prepare_datasets, prepare_manifests
from mtkd.hparams import load_hparams, run_stage, save_resolved_hparams
from mtkd.teacher_store import (
    StoreError,
    StoreOptions,
    TeacherStore,
    claim_parts,
    format_summary,
    manifest_info,
    merge_store,
    part_file_name,
    part_meta,
    plan_parts,
    select_teachers,
    store_settings,
    write_part,
    write_summary,
)
from mtkd.teachers import (
    check_run_labels,
    check_teacher_list,
    load_teacher,
    pipeline_label_keys,
    teacher_checksum,
)

logger = logging.getLogger(__name__)


def make_loaders(hparams, datasets):
    """One plain loader per split (order and batch size do not matter)."""
    return {
        split: sb.dataio.dataloader.make_dataloader(
            datasets[split],
            batch_size=hparams["batch_size"],
            num_workers=hparams["num_workers"],
        )
        for split in SPLITS
    }


def open_for_summary(store_folder, summary_file):
    """The store as it now is, or None (and no stale summary) if unreadable."""
    try:
        return TeacherStore(store_folder, allow_missing=True)
    except StoreError as err:
        logger.warning("The store cannot be read yet: %s", err)
        if os.path.exists(summary_file):
            os.remove(summary_file)
        return None


def plan_run(hparams, files, options, splits):
    """The parts this run writes: those not already complete in the store."""
    settings = store_settings(
        files[0].labels, files[0].special_indices, options, splits
    )
    requested = select_teachers(
        len(files), hparams["teacher_index"], hparams["teacher_indices"]
    )
    plan = plan_parts(
        hparams["store_folder"],
        files,
        requested,
        settings,
        checksum=lambda k: teacher_checksum(files[k]),
        overwrite=hparams["overwrite"],
        part_size=hparams["teachers_per_part"],
    )
    for path, indices in plan.done.items():
        if indices:
            logger.info("Skipping teachers %s: %s is complete", indices, path)
    for warning in plan.warnings:
        logger.warning(warning)
    return plan, settings


def report(hparams, progress):
    """Prints and saves the store summary; merges the parts when asked."""
    store = open_for_summary(hparams["store_folder"], hparams["summary_file"])
    if store is None:
        return
    print(format_summary(write_summary(store, hparams["summary_file"])))
    if not hparams["merge"]:
        return
    if store.missing_teachers:
        logger.warning("Not merging: teachers %s missing", store.missing_teachers)
        return
    merged = merge_store(hparams["store_folder"], hparams["merged_file"], progress)
    print(f"Merged store: {merged}")


def main(argv):
    loaded = load_hparams(argv)
    hparams = loaded.hparams
    device = cluster.preflight(loaded.run_opts)  # stops now if no kernels for this GPU
    cluster.exit_on_signal()  # SIGUSR1/SIGTERM: drop the part being written, exit 75
    sb.create_experiment_directory(hparams["output_folder"])
    save_resolved_hparams(loaded)
    prepare_manifests(hparams)

    # The teachers: every line checked (files, shared labels) before any work.
    list_file = hparams["tea_models_dir"]
    files = check_teacher_list(list_file, hparams["phn_set"])
    hparams.update(pipeline_label_keys(files))
    label_path = os.path.join(hparams["output_folder"], "label_encoder.txt")
    datasets, label_encoder = prepare_datasets(hparams, label_path)
    check_run_labels(label_encoder, files)

    options = StoreOptions.from_hparams(hparams)
    splits = {s: manifest_info(hparams[f"{s}_annotation"]) for s in SPLITS}
    plan, settings = plan_run(hparams, files, options, splits)

    progress = not loaded.run_opts["noprogressbar"]
    # Another run writing one of these parts stops this one here (PartLock).
    locks = claim_parts(hparams["store_folder"], plan.todo)
    try:
        for indices in plan.todo:
            path = os.path.join(hparams["store_folder"], part_file_name(indices))
            if os.path.exists(path):  # finished by another run since planning
                logger.info("Skipping teachers %s: %s is complete", indices, path)
                continue
            teachers = [
                load_teacher(
                    files[k].model_ckpt, device, files[k].line_no, list_file, k
                )
                for k in indices
            ]
            meta = part_meta(teachers, settings, splits, list_file, len(files), options)
            logger.info("Writing teachers %s to %s", indices, path)
            loaders = make_loaders(hparams, datasets)
            with cluster.autocast(device, loaded.run_opts["precision"]):
                write_part(
                    path, teachers, loaders, meta, options, progress,
                    lock=locks[tuple(indices)],
                )  # fmt: skip
            del teachers  # free them before the next part's teachers are loaded
    finally:
        for lock in locks.values():
            lock.release()

    report(hparams, progress)


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
