"""A resumed run ends with exactly the weights of the run that went straight
through (issue 21): the checkpoints keep the random state (mtkd/repro.py).

Teacher: killed (SIGKILL) after epoch 1's checkpoint, resumed. Student:
pre-empted mid-epoch (SIGUSR1, an intra-epoch checkpoint), resumed, with a
DataLoader worker. Both with the waveform augmentation on (tea0's default),
on CPU, one thread. A control shows that the comparison can fail: the same
resume without the saved random state ends elsewhere.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, run_script
from test_preemption import start_and_signal

from mtkd.cluster import REQUEUE_EXIT_CODE

# Five tiny trainings of two epochs (about 1.5 min on 2 cores): run by .ci/run
# after the default suite, with `pytest -m slow`.
pytestmark = pytest.mark.slow

TWO_EPOCHS = ["--number_of_epochs", "2", "--batch_size", "4", "--test_beam_size", "1"]


def teacher_command(corpus, out):
    return [
        "train_teacher.py", "hparams/teachers/tea0.yaml", "--data_folder", corpus,
        "--output_folder", str(out), "--device", "cpu", "--noprogressbar",
        *TINY_MODEL, *TWO_EPOCHS,
    ]  # fmt: skip


def complete_checkpoints(save):
    """{epoch: folder} of the complete end-of-epoch checkpoints in ``save``."""
    found = {}
    for name in os.listdir(save):
        meta_path = os.path.join(save, name, "CKPT.yaml")
        if name.startswith("CKPT+") and os.path.exists(meta_path):
            meta = yaml.safe_load(open(meta_path))
            if meta.get("end-of-epoch"):
                found[meta["epoch"]] = os.path.join(save, name)
    return found


def final_weights(out):
    """The model weights of epoch 2's checkpoint (the most recent is kept)."""
    folder = complete_checkpoints(os.path.join(out, "save"))[2]
    return torch.load(os.path.join(folder, "model.ckpt"), map_location="cpu")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[0]}"


def epoch_lines(out):
    """The train log's epoch lines (losses and valid PERs) without wall times."""
    lines = open(os.path.join(out, "train_log.txt")).read().splitlines()
    return [line.split(", time_s")[0] for line in lines if line.startswith("epoch")]


def kill_after_first_epoch(command, log_path, save):
    """Runs ``command`` and SIGKILLs it once epoch 1's checkpoint is complete."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=SCRIPT_ENV, stdout=log, stderr=log
        )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(save) and 1 in complete_checkpoints(save):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    return proc.returncode


def test_teacher_killed_after_epoch_1_resumes_to_the_same_weights(
    mini_corpus, tmp_path
):
    straight = tmp_path / "straight"
    run_script(teacher_command(mini_corpus, straight))

    resumed = tmp_path / "resumed"
    command = teacher_command(mini_corpus, resumed)
    status = kill_after_first_epoch(
        [sys.executable, *command], tmp_path / "killed.log", resumed / "save"
    )
    assert status == -signal.SIGKILL
    assert sorted(complete_checkpoints(resumed / "save")) == [1]
    run_script(command)

    assert epoch_lines(resumed) == epoch_lines(straight)
    assert_same_weights(final_weights(resumed), final_weights(straight))
    assert (resumed / "per_test.txt").read_text() == (
        straight / "per_test.txt"
    ).read_text()

    # Control: the same resume without the saved random state (as before
    # issue 21) re-seeds the generators, and epoch 2 ends elsewhere.
    control = tmp_path / "control"
    command = teacher_command(mini_corpus, control)
    kill_after_first_epoch(
        [sys.executable, *command], tmp_path / "control.log", control / "save"
    )
    (epoch1,) = complete_checkpoints(control / "save").values()
    os.remove(os.path.join(epoch1, "random_state.ckpt"))
    proc = run_script(command)
    assert "missing a load path for random_state" in proc.stderr
    weights = final_weights(control)
    assert any(not torch.equal(weights[k], final_weights(straight)[k]) for k in weights)


def test_student_preempted_mid_epoch_resumes_to_the_same_weights(
    mini_corpus, teacher_store, tiny_teachers, tmp_path
):
    def command(out):
        return [
            "train_kd.py", "hparams/train_kd.yaml", "--data_folder", mini_corpus,
            "--tea_infer_dir", teacher_store, "--pretrain_st_dir", tiny_teachers[0],
            "--output_folder", str(out), "--strategy", "weighted",
            "--num_workers", "1", "--device", "cpu", "--noprogressbar",
            *TINY_MODEL, *TWO_EPOCHS,
        ]  # fmt: skip

    straight = tmp_path / "straight"
    run_script(command(straight))

    resumed = tmp_path / "resumed"
    status = start_and_signal(
        [sys.executable, *command(resumed)], tmp_path / "first.log"
    )
    log = (tmp_path / "first.log").read_text()
    assert status == REQUEUE_EXIT_CODE, log[-3000:]
    assert not complete_checkpoints(resumed / "save")  # mid-epoch 1 only
    proc = run_script(command(resumed))
    assert "Resuming epoch 1 after batch" in proc.stdout + proc.stderr

    assert epoch_lines(resumed)[1:] == epoch_lines(straight)[1:]
    assert_same_weights(final_weights(resumed), final_weights(straight))
