#!/usr/bin/env python3
"""Stage 1: train one teacher, a joint CTC/attention phoneme recogniser on TIMIT.

    python train_teacher.py hparams/teachers/tea0.yaml --data_folder /path/to/TIMIT

Greedy search on valid (keeps the best checkpoint, drives NewBob), beam search
on test; the test PER report goes to ``per_test.txt``. Interrupted runs resume
from their last checkpoint when the same command is run again.

Several GPUs: ``torchrun --nproc_per_node=G train_teacher.py ...`` (SpeechBrain DDP).
SIGUSR1 or SIGTERM (a SLURM time limit or pre-emption, see ``slurm/``) saves
a checkpoint at the next batch and exits with status 75; the same command
resumes there.

The output folder keeps all that stage 2 needs to rebuild this teacher:
``hyperparams.yaml`` (every value used), ``save/label_encoder.txt``,
``save/model_config.json`` and ``save/CKPT+*/model.ckpt`` (the weights; the
normalisation statistics are ``normalize.ckpt`` beside it). The line for the
teacher list file is printed at the end: the ``model.ckpt`` of the best
checkpoint.

Authors: the project's engineers (after Gao, Parcollet & Lane, 2020).
"""

import os
import sys

import speechbrain as sb

from mtkd import cluster
from mtkd.brain import ASRBrain, train_and_test
from mtkd.data import prepare_datasets, prepare_manifests, train_loader_kwargs
from mtkd.hparams import load_hparams, run_stage, save_resolved_hparams
from mtkd.runs import lock_run_folder
from mtkd.stage_help import print_help_if_asked

# The keys --help lists when no YAML file is named.
HELP_HPARAMS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "hparams/teachers/tea0.yaml"
)


def main(argv):
    if print_help_if_asked(
        argv, "train_teacher.py", HELP_HPARAMS, __doc__.split("\n\n")[0]
    ):
        return
    loaded = load_hparams(argv)  # also the device preflight
    hparams = loaded.hparams
    cluster.requeue_on_signal()  # SIGUSR1/SIGTERM: checkpoint, exit for requeue
    sb.utils.distributed.ddp_init_group(loaded.run_opts)
    lock_run_folder(hparams["output_folder"])  # one run per folder (run.lock)
    sb.create_experiment_directory(hparams["output_folder"])
    save_resolved_hparams(loaded)
    prepare_manifests(hparams)
    datasets, label_encoder = prepare_datasets(hparams)

    train_and_test(
        ASRBrain,
        loaded,
        datasets,
        label_encoder,
        train_loader_kwargs(hparams, datasets["train"]),
        "Teacher list file line",
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
