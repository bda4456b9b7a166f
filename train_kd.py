#!/usr/bin/env python3
"""Stage 3: train a student from the reference labels and the teacher store.

    python train_kd.py hparams/train_kd.yaml --data_folder /path/to/TIMIT \\
        --tea_infer_dir results/teacher_store --pretrain_st_dir T/model.ckpt \\
        --strategy weighted

Strategies (``strategy``): ``average``, ``best``, ``weighted`` (Gao, Parcollet
& Lane, 2020); see docs/stages.md "Distillation strategies" and ``mtkd/strategies.py``.
Teacher targets are looked up by utterance ID, so any batch size, order
(``sorting: random``), dynamic batching and waveform augmentation work. The run
stops before training if the store does not match this run's data or labels.
Valid (greedy) and test (beam) are scored on the reference alone, as a teacher.

Several GPUs: ``torchrun --nproc_per_node=G train_kd.py ...`` (SpeechBrain DDP).
SIGUSR1 or SIGTERM (a SLURM time limit or pre-emption, see ``slurm/``) saves
a checkpoint at the next batch and exits with status 75; the same command
resumes there.
"""

import os
import sys

import speechbrain as sb
from speechbrain.utils.distributed import run_on_main

from mtkd import cluster
from mtkd.data import (
    BASE_OUTPUT_KEYS,
    prepare_datasets,
    prepare_manifests,
    train_loader_kwargs,
)
from mtkd.distill import (
    TEACHER_KEY,
    KDBatch,
    KDBrain,
    add_teacher_pipeline,
    check_store_matches,
    load_pretrained_encoder,
)
from mtkd.hparams import HparamsError, load_hparams, run_stage, save_resolved_hparams
from mtkd.model import write_model_config
from mtkd.runs import best_checkpoint_model_path
from mtkd.stage_help import print_help_if_asked
from mtkd.store import TeacherStore
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
    if not 0.0 <= hparams["alpha"] <= 1.0:
        raise HparamsError(f"alpha must be in [0, 1], got {hparams['alpha']}")


def main(argv):
    summary = __doc__.split("\n\n")[0]
    if print_help_if_asked(argv, "train_kd.py", HELP_HPARAMS, summary):
        return
    loaded = load_hparams(argv)
    hparams = loaded.hparams
    check_kd_keys(hparams)
    cluster.preflight(loaded.run_opts)  # stops now if no kernels for this GPU
    cluster.requeue_on_signal()  # SIGUSR1/SIGTERM: checkpoint, exit for requeue
    sb.utils.distributed.ddp_init_group(loaded.run_opts)
    sb.create_experiment_directory(hparams["output_folder"])
    save_resolved_hparams(loaded)
    prepare_manifests(hparams)
    datasets, label_encoder = prepare_datasets(hparams)
    store = TeacherStore(hparams["tea_infer_dir"])
    check_store_matches(store, hparams, label_encoder)
    add_teacher_pipeline(datasets["train"], store)
    sb.dataio.dataset.set_output_keys(
        [datasets["train"]], BASE_OUTPUT_KEYS + [TEACHER_KEY]
    )

    is_fresh_run = not any(
        name.startswith("CKPT+") for name in os.listdir(hparams["save_folder"])
    )
    if hparams["pretrain"] and is_fresh_run:
        load_pretrained_encoder(hparams["model"], hparams["pretrain_st_dir"])

    brain = KDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=loaded.run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    run_on_main(
        write_model_config,
        args=[hparams["save_folder"], hparams, hparams["model"]],
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=train_loader_kwargs(hparams, datasets["train"], KDBatch),
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        datasets["test"],
        min_key="selection",
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    if sb.utils.distributed.if_main_process():
        print("Student model (best valid checkpoint):")
        print(best_checkpoint_model_path(hparams["save_folder"]))


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
