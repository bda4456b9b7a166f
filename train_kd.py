#!/usr/bin/env python3
"""Stage 3: train a student from the reference labels and the teacher store.

    python train_kd.py hparams/train_kd.yaml --data_folder /path/to/TIMIT \\
        --tea_infer_dir results/teacher_store --pretrain_checkpoint T/model.ckpt \\
        --strategy weighted

Strategies (``strategy``): ``average``, ``best``, ``weighted`` (Gao, Parcollet
& Lane, 2020); see docs/stages.md "Distillation strategies" and ``mtkd/strategies.py``.
Teacher targets are looked up by utterance ID, so any batch size, order
(``sorting: random``), dynamic batching and waveform augmentation work. The run
stops before training if the store does not match this run's data or labels.
Valid (greedy) and test (beam) are scored on the reference alone, as a teacher.

``--unlabelled SOURCE`` (as given to save_teachers.py) adds audio without
transcripts: the store's unlabelled part gives its targets, and each such
utterance is learnt from the teachers (``unlabelled_alpha`` 1), from their
consensus as a hard label (0: self-training), or both. ``data_seen.json`` in
the output folder records how much of each the run trained on.

Several GPUs: ``torchrun --nproc_per_node=G train_kd.py ...`` (SpeechBrain DDP).
SIGUSR1 or SIGTERM (a SLURM time limit or pre-emption, see ``slurm/``) saves
a checkpoint at the next batch and exits with status 75; the same command
resumes there.
"""

import json
import os
import sys

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from mtkd import cluster
from mtkd.brain import train_and_test
from mtkd.data import (
    BASE_OUTPUT_KEYS,
    prepare_datasets,
    prepare_manifests,
    prepare_unlabelled_manifest,
    train_loader_kwargs,
)
from mtkd.distill import (
    TEACHER_KEY,
    KDBatch,
    KDBrain,
    add_teacher_pipeline,
    check_store_matches,
    check_unlabelled_store,
    dropped_note,
    epochs_for_unfiltered_updates,
    keep_by_disagreement,
    load_pretrained_encoder,
    mixed_train_manifest,
)
from mtkd.hparams import HparamsError, load_hparams, run_stage, save_resolved_hparams
from mtkd.runs import lock_run_folder
from mtkd.stage_help import print_help_if_asked
from mtkd.store import TeacherStore
from mtkd.store.reader import UNLABELLED_SCORES
from mtkd.strategies import STRATEGIES, WEIGHT_SCOPES

# The keys --help lists when no YAML file is named.
HELP_HPARAMS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "hparams/train_kd.yaml"
)


def check_kd_keys(hparams):
    """Clear errors for the distillation keys, before anything is built."""
    if not hparams["tea_infer_dir"]:
        raise HparamsError(
            "tea_infer_dir is not set: give the teacher store folder written by "
            "save_teachers.py with --tea_infer_dir."
        )
    if hparams["strategy"] not in STRATEGIES:
        raise HparamsError(f"strategy must be one of {STRATEGIES}")
    if hparams["weight_scope"] not in WEIGHT_SCOPES:
        raise HparamsError(f"weight_scope must be one of {WEIGHT_SCOPES}")
    for key in ("alpha", "unlabelled_alpha"):
        if key in hparams and not 0.0 <= hparams[key] <= 1.0:
            raise HparamsError(f"{key} must be in [0, 1], got {hparams[key]}")
    if hparams.get("unlabelled_scores", "consensus") not in UNLABELLED_SCORES:
        raise HparamsError(f"unlabelled_scores must be one of {UNLABELLED_SCORES}")
    threshold = hparams.get("unlabelled_max_disagreement")
    is_number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
    if threshold is not None and not (is_number and threshold >= 0):
        raise HparamsError(
            f"unlabelled_max_disagreement must be null or a PER in % (>= 0), "
            f"got {threshold}"
        )
    if hparams.get("unlabelled_match_updates") and hparams.get("dynamic_batching"):
        raise HparamsError(
            "unlabelled_match_updates counts updates as fixed-size batches: set "
            "dynamic_batching False, or unlabelled_match_updates False."
        )
    if hparams.get("unlabelled"):
        missing = [
            key for key in ("unlabelled_annotation", "mixed_train_annotation",
                            "unlabelled_alpha") if key not in hparams
        ]  # fmt: skip
        if missing:
            raise HparamsError(
                f"unlabelled is set but the hparams file has no {', '.join(missing)}"
                " (a copy of an older train_kd.yaml?): add them as in the recipe's "
                "hparams/train_kd.yaml"
            )


def training_data(hparams, store):
    """The hparams the datasets are built from: this run's, with train
    replaced by train + the unlabelled audio when ``unlabelled`` is set (the
    manifest written to ``mixed_train_annotation``, its amounts to
    ``data_seen.json``)."""
    if not hparams.get("unlabelled"):
        return hparams
    prepare_unlabelled_manifest(hparams)
    pseudo_refs, disagreement = check_unlabelled_store(store, hparams)
    seen = {}
    epochs = match_unfiltered_updates(hparams, pseudo_refs, disagreement)

    def write():
        seen.update(
            mixed_train_manifest(
                hparams["train_annotation"],
                hparams["unlabelled_annotation"],
                pseudo_refs,
                store.label_encoder_labels,
                hparams["mixed_train_annotation"],
                disagreement,
                hparams.get("unlabelled_max_disagreement"),
            )
        )
        seen["unlabelled_alpha"] = hparams["unlabelled_alpha"]
        if epochs:
            seen["epochs"] = epochs
        path = os.path.join(hparams["output_folder"], "data_seen.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(seen, f, indent=2)
        os.replace(path + ".tmp", path)
        # The resolved hyperparams say it too, where a reader of the run looks.
        labelled, unlabelled = seen["labelled"], seen["unlabelled"]
        with open(
            os.path.join(hparams["output_folder"], "hyperparams.yaml"), "a",
            encoding="utf-8",
        ) as f:  # fmt: skip
            f.write(
                f"# data seen per epoch: {labelled['utterances']} labelled "
                f"utterances ({labelled['hours']:.3f} h), "
                f"{unlabelled['utterances']} unlabelled ({unlabelled['hours']:.3f} "
                f"h; {seen['unlabelled_empty_consensus']} left out: empty "
                f"consensus{dropped_note(seen)}) - data_seen.json\n"
            )
            if epochs:
                f.write(
                    f"# epochs: {epochs['trained']}, not {epochs['asked']}: as many "
                    "updates as without the filter (unlabelled_match_updates)\n"
                )

    run_on_main(write)
    return {**hparams, "train_annotation": hparams["mixed_train_annotation"]}


def match_unfiltered_updates(hparams, pseudo_refs, disagreement):
    """With ``unlabelled_match_updates`` and a disagreement filter: raises the
    epoch counter's limit so that the run takes as many optimiser updates as
    the same run without the filter (``epochs_for_unfiltered_updates``), and
    returns {"asked", "trained"} epochs for the run's record; else None.
    Every process computes it (the same on each), so DDP ranks agree."""
    threshold = hparams.get("unlabelled_max_disagreement")
    if not hparams.get("unlabelled_match_updates") or threshold is None:
        return None
    usable = [u for u, ref in pseudo_refs.items() if len(ref)]  # as the manifest
    kept = keep_by_disagreement(disagreement, threshold, usable)
    with open(hparams["train_annotation"], encoding="utf-8") as f:
        labelled = len(json.load(f))
    asked = hparams["number_of_epochs"]
    trained = epochs_for_unfiltered_updates(
        asked, hparams["batch_size"], labelled, len(usable), len(kept)
    )
    hparams["epoch_counter"].limit = trained
    return {"asked": asked, "trained": trained}


def main(argv):
    summary = __doc__.split("\n\n")[0]
    if print_help_if_asked(argv, "train_kd.py", HELP_HPARAMS, summary):
        return
    loaded = load_hparams(argv)  # also the device preflight
    hparams = loaded.hparams
    check_kd_keys(hparams)
    cluster.requeue_on_signal()  # SIGUSR1/SIGTERM: checkpoint, exit for requeue
    sb.utils.distributed.ddp_init_group(loaded.run_opts)
    lock_run_folder(hparams["output_folder"])  # one run per folder (run.lock)
    sb.create_experiment_directory(hparams["output_folder"])
    save_resolved_hparams(loaded)
    prepare_manifests(hparams)
    store = TeacherStore(hparams["tea_infer_dir"])
    datasets, label_encoder = prepare_datasets(training_data(hparams, store))
    check_store_matches(store, hparams, label_encoder)
    add_teacher_pipeline(
        datasets["train"],
        store,
        None if hparams.get("unlabelled") else "train",
        hparams.get("unlabelled_scores", "consensus"),
    )
    sb.dataio.dataset.set_output_keys(
        [datasets["train"]], BASE_OUTPUT_KEYS + [TEACHER_KEY]
    )

    is_fresh_run = not any(
        name.startswith("CKPT+") for name in os.listdir(hparams["save_folder"])
    )
    if hparams["pretrain"] and is_fresh_run:
        load_pretrained_encoder(hparams["model"], hparams["pretrain_st_dir"])

    train_and_test(
        KDBrain,
        loaded,
        datasets,
        label_encoder,
        train_loader_kwargs(hparams, datasets["train"], KDBatch),
        "Student model",
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
