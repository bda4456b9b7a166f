"""Pre-emption and time limits: SIGUSR1 -> intra-epoch checkpoint, exit 75,
the same command resumes after the last batch trained; the sbatch wrapper
turns it into a requeue and never redoes a finished stage."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, SCRIPT_ENV, TINY_MODEL

from mtkd.cluster import REQUEUE_EXIT_CODE

# 48 training utterances in batches of 4: 12 batches (optimizer steps) an epoch.
RUN = ["--number_of_epochs", "1", "--batch_size", "4", "--test_beam_size", "2"]
BATCHES_PER_EPOCH = 12


def start_and_signal(command, log_path, env=None, timeout=240):
    """Starts ``command`` (output to ``log_path``), sends SIGUSR1 once training
    has begun; returns the exit status."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env or SCRIPT_ENV, stdout=log, stderr=log
        )
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if "Going into epoch 1" in open(log_path).read():
            proc.send_signal(signal.SIGUSR1)
            break
        time.sleep(0.05)
    return proc.wait(timeout=timeout)


def checkpoints(save):
    """{folder name: (meta, brain state)} of the complete checkpoints."""
    out = {}
    for folder in sorted(save.glob("CKPT+*")):
        if (folder / "CKPT.yaml").exists():
            meta = yaml.safe_load((folder / "CKPT.yaml").read_text())
            brain = yaml.safe_load((folder / "brain.ckpt").read_text())
            out[folder.name] = (meta, brain)
    return out


def epochs_logged(out):
    log = (out / "train_log.txt").read_text()
    return [int(e) for e in re.findall(r"^epoch: (\d+)", log, re.M)]


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_sigusr1_checkpoints_mid_epoch_and_the_rerun_resumes(mini_corpus, tmp_path):
    out = tmp_path / "tea0"
    command = [
        sys.executable, "train_teacher.py", "hparams/teachers/tea0.yaml",
        "--data_folder", mini_corpus, "--output_folder", str(out), "--device", "cpu",
        "--noprogressbar", *TINY_MODEL, *RUN,
    ]  # fmt: skip
    status = start_and_signal(command, tmp_path / "first.log")
    log = (tmp_path / "first.log").read_text()
    assert status == REQUEUE_EXIT_CODE, log[-3000:]
    assert "stop signal (SIGUSR1): saved an intra-epoch checkpoint" in log
    assert not (out / "per_test.txt").exists()
    # One checkpoint, complete (AtomicCheckpointer), mid-epoch.
    (meta, brain), *others = checkpoints(out / "save").values()
    assert not others and meta["end-of-epoch"] is False
    stopped_after = brain["step"]
    assert 0 < stopped_after < BATCHES_PER_EPOCH
    assert not list((out / "save").glob("*/*.pending"))

    second = subprocess.run(
        command, cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=300
    )
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert f"Resuming epoch 1 after batch {stopped_after} " in log
    assert epochs_logged(out) == [1]  # the epoch finished once, no extra epoch
    assert re.match(r"PER: [0-9.]+", (out / "per_test.txt").read_text())
    # Every batch of the epoch was trained exactly once over the two runs.
    (meta, brain), *others = checkpoints(out / "save").values()
    assert not others and meta["end-of-epoch"] is True
    assert brain["optimizer_step"] == BATCHES_PER_EPOCH


def write_settings(path, corpus, out):
    """A settings file as submit_all.sh writes it, for CPU and tiny models."""
    values = {
        "MTKD_DATA": corpus, "MTKD_OUT": str(out), "MTKD_REPO": REPO,
        "MTKD_ENV_SETUP": ":", "MTKD_PYTHON": sys.executable,
        "MTKD_TEACHER_IDS": "0", "MTKD_TEACHER_GPUS": "0", "MTKD_STORE_GPUS": "0",
        "MTKD_KD_GPUS": "0", "MTKD_PRECISION": "fp32", "MTKD_EVAL_PRECISION": "fp32",
        "MTKD_STRATEGY": "best", "MTKD_PRETRAIN_TEACHER": "0", "MTKD_MERGE": "0",
        "MTKD_TEACHER_ARGS": " ".join(TINY_MODEL + RUN), "MTKD_STORE_ARGS": "",
        "MTKD_KD_ARGS": "", "MTKD_STOP_GRACE": "60", "MTKD_MAX_REQUEUES": "3",
        "MTKD_STORE": str(out / "teacher_store"),
        "MTKD_MERGED": str(out / "merged.h5"),
        "MTKD_TEACHER_LIST": str(out / "teachers.txt"),
        "MTKD_KD_OUT": str(out / "student"),
    }  # fmt: skip
    path.write_text("".join(f"export {k}='{v}'\n" for k, v in values.items()))


@pytest.mark.slow  # two tiny trainings; the wrapper's logic alone: test_slurm.py
def test_sbatch_wrapper_requeues_on_sigusr1_and_skips_when_done(mini_corpus, tmp_path):
    """teacher.sbatch run as SLURM would (array task 0), with a fake scontrol:
    SIGUSR1 to the batch shell -> checkpoint, `scontrol requeue <job>`; the
    requeued run finishes; a third run does nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    scontrol.chmod(0o755)
    settings = tmp_path / "settings.sh"
    write_settings(settings, mini_corpus, tmp_path / "out")
    env = {
        **SCRIPT_ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "0",
    }  # fmt: skip
    command = ["bash", "slurm/teacher.sbatch", str(settings)]

    status = start_and_signal(command, tmp_path / "job1.log", env=env)
    log = (tmp_path / "job1.log").read_text()
    assert status == 0, log[-3000:]
    assert "SIGUSR1: asking the stage to checkpoint and stop" in log
    assert "stopped early (status 75, signal USR1)" in log
    assert calls.read_text() == "requeue 4242\n"

    env["SLURM_RESTART_COUNT"] = "1"
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming epoch 1 after batch" in second.stderr + second.stdout
    per_test = tmp_path / "out" / "teachers" / "tea0" / "per_test.txt"
    assert per_test.exists()
    third = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert third.returncode == 0 and "already complete" in third.stderr
    assert calls.read_text() == "requeue 4242\n"  # no second requeue
