#!/usr/bin/env python3
"""Stage 2: run every teacher once and store what distillation needs.

    python save_teachers.py hparams/save_teachers.yaml --data_folder /path/to/TIMIT \
        --teacher_list teachers.txt --output_folder results/store

For every teacher of the list file and every utterance of train, valid and
test, the store keeps the greedy CTC hypothesis, the teacher-forced attention
distributions and both per-utterance PERs, keyed by utterance ID: the student
(stage 3) reads them with any batch size or order and never runs a teacher.

``--unlabelled SOURCE`` (``timit_sa``, a folder of audio, or a manifest with
``wav`` and ``duration``) also writes the store's unlabelled part: every
teacher on that audio, teacher-forced on the consensus of their hypotheses
(docs/stages.md "Audio without transcripts"). It needs every teacher of the
list in one run; ``--teacher_index`` array tasks leave it to such a run.

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

import os
import sys

import speechbrain as sb

from mtkd import cluster
from mtkd.data import (
    SPLITS,
    load_unlabelled_dataset,
    prepare_datasets,
    prepare_manifests,
    prepare_unlabelled_manifest,
)
from mtkd.hparams import load_hparams, run_stage, save_resolved_hparams
from mtkd.stage_help import print_help_if_asked
from mtkd.store import report_store, write_store, write_unlabelled_part
from mtkd.teachers import (
    check_run_labels,
    check_teacher_list,
    load_teacher,
    pipeline_label_keys,
)

# The keys --help lists when no YAML file is named.
HELP_HPARAMS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "hparams/save_teachers.yaml"
)


def loader_options(hparams):
    """Batch size and workers; the workers leave SIGTERM/SIGUSR1/SIGINT to
    this process, which drops the part it writes and exits 75 (or 130)."""
    return cluster.loader_kwargs_for_signals(
        {"batch_size": hparams["batch_size"], "num_workers": hparams["num_workers"]}
    )


def make_loaders(hparams, datasets):
    """One plain loader per split (order and batch size do not matter)."""
    return {
        split: sb.dataio.dataloader.make_dataloader(
            datasets[split], **loader_options(hparams)
        )
        for split in SPLITS
    }


def is_array_task(hparams):
    """Whether this run writes some teachers' part only (``--teacher_index``,
    ``--teacher_indices``: one task of an array)."""
    return any(hparams[key] is not None for key in ("teacher_index", "teacher_indices"))


def write_unlabelled(hparams, list_file, files, load, device, run_opts):
    """The store's unlabelled part (every teacher at once: the consensus needs
    all their hypotheses); an array task for some teachers leaves it."""
    prepare_unlabelled_manifest(hparams)  # skips itself if already prepared
    if is_array_task(hparams):
        print(
            "The unlabelled part needs every teacher in one run: once the "
            "array's parts are written, run this command again without "
            "--teacher_index / --teacher_indices (the parts are reused)."
        )
        return
    data = load_unlabelled_dataset(hparams)
    loader = sb.dataio.dataloader.make_dataloader(data, **loader_options(hparams))
    write_unlabelled_part(
        hparams["store_folder"],
        list_file,
        files,
        hparams["unlabelled_annotation"],
        loader,
        load,
        temperature=hparams["temperature"],
        att_dist_dtype=hparams["att_dist_dtype"],
        compression=hparams["store_compression"],
        overwrite=hparams["overwrite"],
        autocast=lambda: cluster.autocast(device, run_opts["precision"]),
        progress=not run_opts["noprogressbar"],
        source=hparams["unlabelled"],
    )


def main(argv):
    if print_help_if_asked(
        argv, "save_teachers.py", HELP_HPARAMS, __doc__.split("\n\n")[0]
    ):
        return
    loaded = load_hparams(argv)  # also the device preflight
    hparams = loaded.hparams
    device = loaded.device
    cluster.exit_on_signal()  # SIGUSR1/SIGTERM: drop the part being written, exit 75
    # The teachers: every line checked (files, shared labels) before anything
    # is written.
    list_file = hparams["tea_models_dir"]
    files = check_teacher_list(list_file, hparams["phn_set"])
    sb.create_experiment_directory(hparams["output_folder"])
    save_resolved_hparams(loaded)
    prepare_manifests(hparams)
    if hparams.get("unlabelled") and not is_array_task(hparams):
        # Every unlabelled file checked now, not after the labelled parts.
        prepare_unlabelled_manifest(hparams)
    hparams.update(pipeline_label_keys(files))
    label_path = os.path.join(hparams["output_folder"], "label_encoder.txt")
    datasets, label_encoder = prepare_datasets(hparams, label_path)
    check_run_labels(label_encoder, files)

    def load(k):
        """Teacher k of the list, on this run's device."""
        return load_teacher(files[k].model_ckpt, device, files[k].line_no, list_file, k)

    # Parts already complete are kept; the others are written, one at a time.
    progress = not loaded.run_opts["noprogressbar"]
    write_store(
        hparams["store_folder"],
        list_file,
        files,
        {split: hparams[f"{split}_annotation"] for split in SPLITS},
        make_loaders(hparams, datasets),
        load,
        temperature=hparams["temperature"],
        att_dist_dtype=hparams["att_dist_dtype"],
        compression=hparams["store_compression"],
        teacher_index=hparams["teacher_index"],
        teacher_indices=hparams["teacher_indices"],
        teachers_per_part=hparams["teachers_per_part"],
        overwrite=hparams["overwrite"],
        autocast=lambda: cluster.autocast(device, loaded.run_opts["precision"]),
        progress=progress,
    )
    if hparams.get("unlabelled"):
        write_unlabelled(hparams, list_file, files, load, device, loaded.run_opts)
    report_store(
        hparams["store_folder"],
        hparams["summary_file"],
        hparams["merged_file"] if hparams["merge"] else None,
        progress,
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
