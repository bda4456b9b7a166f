"""DDP: `torchrun --nproc_per_node=2` on CPU (gloo) for stages 1 and 3.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        train_teacher.py hparams/teachers/tea0.yaml --data_folder D \\
        --device cpu --distributed_backend gloo ...

Each rank trains on half the batches (SpeechBrain's DistributedSampler), the
main process alone writes files, and the result loads like a one-process run.
"""

import json
import os
import re

import pytest
import torch
import yaml
from conftest import TINY_MODEL, TINY_RUN, run_script

from mtkd.model import CTCAttentionASR
from mtkd.runs import best_checkpoint

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# Two torchrun launches (about 30 s on 2 cores): run by .ci/run after the
# default suite, with `pytest -m slow`.
pytestmark = pytest.mark.slow
DDP_CPU = ["--device", "cpu", "--distributed_backend", "gloo", "--noprogressbar"]
# 48 training utterances, batches of 8, 2 ranks: 3 batches per rank and epoch.
BATCHES_PER_RANK = 3


def check_run(out, log):
    """What every DDP run must leave: one checkpoint that loads, a test PER,
    epoch 1 logged once, files written once."""
    save = os.path.join(out, "save")
    checkpoint = best_checkpoint(save)
    ckpts = [n for n in os.listdir(save) if n.startswith("CKPT+")]
    assert ckpts == [os.path.basename(checkpoint.path)]  # main process only
    brain = yaml.safe_load(open(os.path.join(checkpoint.path, "brain.ckpt")))
    assert brain["optimizer_step"] == BATCHES_PER_RANK  # half of the 6 batches
    config = json.load(open(os.path.join(save, "model_config.json")))
    model = CTCAttentionASR(**config["model"])
    state = torch.load(os.path.join(checkpoint.path, "model.ckpt"), map_location="cpu")
    model.load_state_dict(state)  # saved unwrapped: no "module." prefix
    first = open(os.path.join(out, "per_test.txt")).readline()
    assert re.match(r"PER: [0-9.]+ ", first)
    train_log = open(os.path.join(out, "train_log.txt")).read()
    assert re.findall(r"^epoch: (\d+)", train_log, re.M) == ["1"]
    assert log.count("Going into epoch 1") == 1  # main process logs
    leftovers = [f for _, _, files in os.walk(out) for f in files if ".tmp" in f]
    assert not leftovers


def test_teacher_trains_on_two_ranks(mini_corpus, tmp_path):
    out = str(tmp_path / "tea0")
    proc = run_script(
        [*TORCHRUN, "train_teacher.py", "hparams/teachers/tea0.yaml",
         "--data_folder", mini_corpus, "--output_folder", out, *DDP_CPU,
         *TINY_MODEL, *TINY_RUN],
        timeout=300,
    )  # fmt: skip
    check_run(out, proc.stdout + proc.stderr)
    assert proc.stdout.strip().splitlines()[-1].endswith("model.ckpt")


def test_student_trains_on_two_ranks_with_bf16(
    mini_corpus, teacher_store, tiny_teachers, tmp_path
):
    """Both ranks read the teacher store (in DataLoader workers too)."""
    out = str(tmp_path / "student")
    proc = run_script(
        [*TORCHRUN, "train_kd.py", "hparams/train_kd.yaml",
         "--data_folder", mini_corpus, "--tea_infer_dir", teacher_store,
         "--pretrain_st_dir", tiny_teachers[0], "--output_folder", out,
         "--strategy", "weighted", "--num_workers", "1", "--precision", "bf16",
         *DDP_CPU, *TINY_MODEL, *TINY_RUN],
        timeout=300,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    check_run(out, log)
    assert "Using training precision: `--precision=bf16`" in log
    weights = open(os.path.join(out, "teacher_weights.jsonl")).read().splitlines()
    assert len(weights) == 1  # one line per epoch, from the main process
    assert len(json.loads(weights[0])["ctc"]["mean_weight_per_teacher"]) == 2
