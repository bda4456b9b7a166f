"""slurm/: every script parses, submit_all.sh chains the stages as its settings
say (dry run, and with a fake sbatch), and the requeue wrapper of
slurm/common.sh decides as documented (with stand-in stages, no training)."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO

from mtkd import RecipeError
from mtkd.checkpoints import AtomicCheckpointer
from mtkd.teachers import write_teacher_list

SLURM = os.path.join(REPO, "slurm")
SUBMIT = os.path.join(SLURM, "submit_all.sh")


def run(command, env=None, **kwargs):
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


@pytest.mark.parametrize(
    "script",
    sorted(glob.glob(os.path.join(SLURM, "*.sh")) + glob.glob(f"{SLURM}/*.sbatch")),
)
def test_every_script_parses(script):
    assert run(["bash", "-n", script]).returncode == 0


def test_sbatch_scripts_ask_for_the_signal_and_requeue():
    for script in glob.glob(f"{SLURM}/*.sbatch"):
        text = open(script).read()
        assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text


def sbatch_lines(stdout):
    """{job name: (sbatch options dict, fake id)} of a dry run's output."""
    jobs = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("sbatch "):
            words = line.split()
            options = dict(
                w[2:].split("=", 1) if "=" in w else (w[2:], True)
                for w in words[1:]
                if w.startswith("--")
            )
            options["script"] = os.path.basename(words[-2])
            fake = re.match(r"#   -> job (\d+) \(dry run\)", lines[i + 1]).group(1)
            jobs[options["job-name"]] = (options, fake)
    return jobs


def test_dry_run_chains_the_stages_and_honours_the_settings(tmp_path):
    out = tmp_path / "out"
    env = {
        "MTKD_DATA": "/data/TIMIT", "MTKD_OUT": str(out), "MTKD_PARTITION": "gpu",
        "MTKD_ACCOUNT": "proj42", "MTKD_TEACHER_TIME": "8:00:00",
        "MTKD_GPU_OPTION": "--gpus-per-node={}", "MTKD_MEM": "64G",
    }  # fmt: skip
    proc = run([SUBMIT, "--dry-run", "MTKD_KD_GPUS=4", "MTKD_PRECISION=bf16"], env)
    assert proc.returncode == 0, proc.stderr
    jobs = sbatch_lines(proc.stdout)
    assert list(jobs) == ["mtkd-teacher", "mtkd-store", "mtkd-kd"]
    (teachers, t_id), (store, s_id), (kd, _) = jobs.values()
    assert teachers["array"] == "0-9" and store["array"] == "0-9"
    assert "dependency" not in teachers
    assert store["dependency"] == f"afterok:{t_id}"
    assert kd["dependency"] == f"afterok:{s_id}"
    assert teachers["script"] == "teacher.sbatch"
    assert store["script"] == "save_teachers.sbatch"
    assert kd["script"] == "train_kd.sbatch"
    for options, _ in jobs.values():
        assert options["partition"] == "gpu" and options["account"] == "proj42"
        assert options["mem"] == "64G" and options["parsable"] is True
        assert options["kill-on-invalid-dep"] == "yes"
        assert options["output"].startswith(f"{out}/logs/")
    assert teachers["time"] == "8:00:00" and kd["time"] == "12:00:00"
    assert teachers["gpus-per-node"] == "1" and kd["gpus-per-node"] == "4"
    assert kd["cpus-per-task"] == "32"  # 8 per GPU
    # The settings every job reads, shown and not written.
    assert "export MTKD_DATA=/data/TIMIT" in proc.stdout
    assert "export MTKD_PRECISION=bf16" in proc.stdout
    assert "export MTKD_KD_GPUS=4" in proc.stdout
    assert f"export MTKD_KD_OUT={out}/student_weighted" in proc.stdout
    assert not out.exists()


def test_dry_run_teacher_subset_throttle_and_merge(tmp_path):
    env = {"MTKD_DATA": "TIMIT", "MTKD_OUT": str(tmp_path / "o")}
    proc = run(
        [SUBMIT, "--dry-run", "MTKD_TEACHERS=0,3,5-7", "MTKD_ARRAY_LIMIT=2",
         "MTKD_MERGE=1", "MTKD_PARTITION="],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jobs = sbatch_lines(proc.stdout)
    assert list(jobs) == ["mtkd-teacher", "mtkd-store", "mtkd-merge", "mtkd-kd"]
    ids = [fake for _, fake in jobs.values()]
    assert jobs["mtkd-teacher"][0]["array"] == "0,3,5-7%2"
    assert jobs["mtkd-store"][0]["array"] == "0-4%2"  # list positions
    for (options, _), previous in zip(list(jobs.values())[1:], ids, strict=False):
        assert options["dependency"] == f"afterok:{previous}"
    assert "gres" not in jobs["mtkd-merge"][0]  # no GPU for merging
    assert "partition" not in jobs["mtkd-teacher"][0]
    assert f"export MTKD_DATA={REPO}/TIMIT" in proc.stdout  # made absolute
    assert "export MTKD_TEACHER_IDS=0\\ 3\\ 5\\ 6\\ 7" in proc.stdout
    # Without MTKD_UNLABELLED: no unlabelled job, the student reads the merge.
    assert "export MTKD_UNLABELLED=''" in proc.stdout
    assert f"export MTKD_KD_STORE={tmp_path}/o/teacher_store_merged.h5" in proc.stdout
    assert "unlabelled" not in proc.stdout.replace("MTKD_UNLABELLED", "")


@pytest.mark.parametrize("merge", ["0", "1"])
def test_dry_run_with_unlabelled_audio(tmp_path, merge):
    """MTKD_UNLABELLED: one job (no array) after the store array writes the
    unlabelled part; the merge and the student wait for it, the student
    reads the store folder (not the merged file) and gets --unlabelled."""
    out = tmp_path / "out"
    env = {"MTKD_DATA": "/data/TIMIT", "MTKD_OUT": str(out), "MTKD_MERGE": merge}
    proc = run(
        [SUBMIT, "--dry-run", "MTKD_UNLABELLED=timit_sa", "MTKD_STORE_GPUS=0",
         "MTKD_STORE_TIME=3:00:00"],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    jobs = sbatch_lines(proc.stdout)
    names = ["mtkd-teacher", "mtkd-store", "mtkd-unlabelled"]
    names += ["mtkd-merge"] * (merge == "1") + ["mtkd-kd"]
    assert list(jobs) == names
    store_id = jobs["mtkd-store"][1]
    unlabelled, unlabelled_id = jobs["mtkd-unlabelled"]
    assert unlabelled["script"] == "unlabelled_store.sbatch"
    assert unlabelled["dependency"] == f"afterok:{store_id}"
    assert "array" not in unlabelled and "gres" not in unlabelled  # STORE_GPUS=0
    assert unlabelled["time"] == "3:00:00"
    assert unlabelled["output"] == f"{out}/logs/%x-%j.out"
    # The student waits for the unlabelled part, not for the merge.
    assert jobs["mtkd-kd"][0]["dependency"] == f"afterok:{unlabelled_id}"
    if merge == "1":
        assert jobs["mtkd-merge"][0]["dependency"] == f"afterok:{unlabelled_id}"
        assert "the student reads the store folder" in proc.stdout
    assert "export MTKD_UNLABELLED=timit_sa" in proc.stdout
    assert f"export MTKD_KD_STORE={out}/teacher_store\n" in proc.stdout
    part = f"{out}/teacher_store/unlabelled-t000-t009.h5"  # 10 teachers
    assert f"export MTKD_UNLABELLED_PART={part}" in proc.stdout
    assert "on train + timit_sa (--unlabelled), store " in proc.stdout


def test_unlabelled_source_paths_are_made_absolute(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    env = {"MTKD_DATA": "/data/TIMIT", "MTKD_OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        [SUBMIT, "--dry-run", "MTKD_UNLABELLED=pool", "MTKD_TEACHERS=3"],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"export MTKD_UNLABELLED={pool}\n" in proc.stdout
    part = f"{tmp_path}/out/teacher_store/unlabelled-t000.h5"  # one teacher
    assert f"export MTKD_UNLABELLED_PART={part}" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "set MTKD_DATA"),
        (["MTKD_DATA=x", "MTKD_PRECISION=fp8"], "MTKD_PRECISION must be"),
        (["MTKD_DATA=x", "MTKD_TEACHERS=0,12"], "no hparams/teachers/tea12.yaml"),
        (["MTKD_DATA=x", "MTKD_STRATEGY=mean"], "MTKD_STRATEGY must be"),
        (["MTKD_DATA=x", "MTKD_PRETRAIN_TEACHER=10"], "MTKD_PRETRAIN_TEACHER"),
        (["MTKD_DATA=x", "--partition=gpu"], "unknown argument"),
        (["MTKD_DATA=x", "MTKD_UNLABELLED=no/such/pool"], "MTKD_UNLABELLED must be"),
    ],
)
def test_bad_settings_are_refused(args, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTKD_")}
    proc = subprocess.run(
        [SUBMIT, "--dry-run", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and message in proc.stderr


def fake_bin(tmp_path, name, body):
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_submission_parses_job_ids_and_writes_the_settings(tmp_path):
    calls = tmp_path / "sbatch.calls"
    # A fake sbatch answering as `--parsable` does on a federated cluster.
    env = fake_bin(
        tmp_path,
        "sbatch",
        f'echo "$*" >> {calls}\nn=$(wc -l < {calls})\necho "$((700 + n));clusterA"\n',
    )
    out = tmp_path / "out"
    env.update(MTKD_DATA="/data/TIMIT", MTKD_OUT=str(out), MTKD_TEACHERS="0-2")
    env["MTKD_ENV_SETUP"] = "module load cuda/12.6; source ~/venvs/mtkd/bin/activate"
    proc = run([SUBMIT], env)
    assert proc.returncode == 0, proc.stderr
    submitted = calls.read_text().splitlines()
    assert len(submitted) == 3
    assert "--dependency=afterok:701 " in submitted[1]
    assert "--dependency=afterok:702 " in submitted[2]
    assert (out / "logs").is_dir()
    settings = out / "slurm_settings.sh"
    assert submitted[0].endswith(f"teacher.sbatch {settings}")
    shown = run(
        ["bash", "-c", f"source {settings}; echo $MTKD_ENV_SETUP; echo $MTKD_STORE"]
    )
    assert shown.stdout.splitlines() == [
        env["MTKD_ENV_SETUP"],
        f"{out}/teacher_store",
    ]


def test_submission_refused_part_way_names_what_was_submitted(tmp_path):
    """sbatch accepts the teachers and refuses the store: submit_all.sh stops
    and says which jobs to cancel."""
    calls = tmp_path / "sbatch.calls"
    env = fake_bin(
        tmp_path,
        "sbatch",
        f'echo "$*" >> {calls}\n'
        f'if [ "$(wc -l < {calls})" -gt 1 ]; then\n'
        '  echo "sbatch: error: Batch job submission failed: Invalid account" >&2\n'
        "  exit 1\n"
        "fi\n"
        "echo 701\n",
    )
    env.update(MTKD_DATA="/data/TIMIT", MTKD_OUT=str(tmp_path / "out"))
    proc = run([SUBMIT], env)
    assert proc.returncode == 1 and len(calls.read_text().splitlines()) == 2
    assert "Invalid account" in proc.stderr
    assert "sbatch refused the job above (sbatch " in proc.stderr
    assert "--job-name=mtkd-store" in proc.stderr
    assert "already submitted: 701 (cancel them: scancel 701)" in proc.stderr


# A stand-in Python for the sbatch scripts: writes its arguments to CALLS and
# creates $FAKE_MARKER, the file the stage would complete.
FAKE_PYTHON = """
echo "$*" >> CALLS
mkdir -p "$(dirname "$FAKE_MARKER")" && touch "$FAKE_MARKER"
"""


def test_unlabelled_and_student_jobs_run_the_stages_as_set(tmp_path):
    """unlabelled_store.sbatch and train_kd.sbatch, with the settings file
    that submit_all.sh writes and a stand-in python: the unlabelled job runs
    save_teachers.py on every teacher (no --teacher_index) with --unlabelled,
    does nothing once its part is complete, runs again for another source;
    the student gets --unlabelled and the store folder even with the merge,
    and the merged file again without MTKD_UNLABELLED."""
    calls = tmp_path / "python.calls"
    env = fake_bin(tmp_path, "sbatch", "echo 7\n")
    env.update(fake_bin(tmp_path, "python", FAKE_PYTHON.replace("CALLS", str(calls))))
    out = tmp_path / "out"
    env.update(
        MTKD_DATA="/data/TIMIT", MTKD_OUT=str(out), MTKD_TEACHERS="0,3",
        MTKD_MERGE="1", MTKD_ENV_SETUP=":", MTKD_PYTHON=str(tmp_path / "bin/python"),
        MTKD_STORE_GPUS="0", MTKD_KD_GPUS="0", MTKD_PRETRAIN_TEACHER="none",
    )  # fmt: skip
    settings = str(out / "slurm_settings.sh")
    part = out / "teacher_store" / "unlabelled-t000-t001.h5"
    per_test = out / "student_weighted" / "per_test.txt"

    def submit(source):
        proc = run([SUBMIT], {**env, "MTKD_UNLABELLED": source})
        assert proc.returncode == 0, proc.stderr

    def job(script, marker):
        before = calls.read_text().splitlines() if calls.exists() else []
        proc = run(
            ["bash", f"{SLURM}/{script}", settings], {**env, "FAKE_MARKER": marker}
        )
        assert proc.returncode == 0, proc.stderr
        new = calls.read_text().splitlines()[len(before) :]
        return new, proc.stderr

    submit("timit_sa")
    (call,), _ = job("unlabelled_store.sbatch", part)
    assert call.startswith("save_teachers.py hparams/save_teachers.yaml ")
    assert f"--tea_models_dir {out}/teachers.txt --unlabelled timit_sa " in call
    assert f"--store_folder {out}/teacher_store " in call and "--device cpu" in call
    assert f"--output_folder {out}/save_teachers/unlabelled " in call
    assert "--teacher_index" not in call
    stamp = out / "save_teachers" / "unlabelled" / "unlabelled_source.txt"
    assert stamp.read_text() == "timit_sa\n"
    new, log = job("unlabelled_store.sbatch", part)  # done: nothing to do
    assert new == [] and "already complete" in log
    pool = tmp_path / "pool"
    pool.mkdir()
    submit(str(pool))  # another source: save_teachers.py decides again
    (call,), _ = job("unlabelled_store.sbatch", part)
    assert f"--unlabelled {pool} " in call and stamp.read_text() == f"{pool}\n"

    (call,), _ = job("train_kd.sbatch", per_test)
    assert call.startswith("train_kd.py hparams/train_kd.yaml ")
    assert f"--tea_infer_dir {out}/teacher_store --pretrain False " in call
    assert f"--unlabelled {pool} --strategy weighted" in call
    per_test.unlink()
    submit("")  # unset: as before, the merged file and no --unlabelled
    (call,), _ = job("train_kd.sbatch", per_test)
    assert f"--tea_infer_dir {out}/teacher_store_merged.h5 " in call
    assert "--unlabelled" not in call


# ---------------------------------------------------------------------------
# The requeue wrapper, with stand-in stages.

# A stand-in stage: works SECONDS, then writes MARKER. SIGUSR1/SIGTERM ->
# exit 75 with the note for the wrapper, as mtkd.cluster does (without
# importing torch, to stay fast); or the signal is ignored when told to.
STAGE = """
import os, signal, sys, time
seconds, marker, mode = float(sys.argv[1]), sys.argv[2], sys.argv[3]
def stop(*_):
    with open(os.environ["MTKD_REQUEUE_FILE"], "a") as f:
        f.write("stop")
    sys.exit(75)
for sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN if mode == "ignore" else stop)
print("stage started", flush=True)
time.sleep(seconds)
if mode == "fail":
    sys.exit(3)
if mode == "stop":
    stop()
open(marker, "w").close()
"""


# A stand-in scontrol: `show job` answers as SLURM does (-o, one line) with
# FAKE_STATE (RUNNING), FAKE_RESTARTS (SLURM_RESTART_COUNT) and the job's log
# FAKE_LOG; other calls are written to the calls file.
SCONTROL = """
if [[ $1 == show ]]; then
    echo "JobId=$SLURM_JOB_ID JobName=mtkd-teacher JobState=${FAKE_STATE:-RUNNING} \
Reason=None Requeue=1 Restarts=${FAKE_RESTARTS:-${SLURM_RESTART_COUNT:-0}} \
StdErr=${FAKE_LOG:-/dev/null} StdOut=${FAKE_LOG:-/dev/null}"
else
    echo "$*" >> CALLS
fi
"""


def wrapper(
    tmp_path, seconds, mode, signal_after=None, extra_env=None, report_status=True
):
    """Runs run_requeueable on the stand-in stage; returns (status, log, calls).
    ``report_status=False``: the shell ends with the wrapper's status (as the
    sbatch scripts do) instead of printing it."""
    stage = tmp_path / "stage.py"
    stage.write_text(STAGE)
    calls = tmp_path / "scontrol.calls"
    env = fake_bin(tmp_path, "scontrol", SCONTROL.replace("CALLS", str(calls)))
    env.update(SLURM_JOB_ID="77", MTKD_STOP_GRACE="2", MTKD_MAX_REQUEUES="5")
    env.update(extra_env or {})
    marker = tmp_path / "done"
    script = (
        f"source {SLURM}/common.sh; MTKD_TORCHRUN=0; "
        f"run_requeueable {marker} {sys.executable} {stage} {seconds} {marker} {mode}"
    )
    if report_status:
        script += '; echo "returned $?"'
    log_path = tmp_path / "wrapper.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script], env={**os.environ, **env}, stdout=log, stderr=log
        )
    if signal_after is not None:
        deadline = time.time() + 30
        while "stage started" not in log_path.read_text() and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal_after)
    status = proc.wait(timeout=60)
    text = calls.read_text() if calls.exists() else ""
    return status, log_path.read_text(), text


def test_wrapper_passes_a_finished_stage_through(tmp_path):
    status, log, calls = wrapper(tmp_path, 0, "ok")
    assert status == 0 and "returned 0" in log and "complete:" in log
    assert calls == ""


def test_wrapper_requeues_a_stage_stopped_by_sigusr1(tmp_path):
    status, log, calls = wrapper(tmp_path, 30, "ok", signal_after=signal.SIGUSR1)
    assert status == 0 and "stopped early (status 75, signal USR1)" in log
    assert calls == "requeue 77\n" and "returned" not in log


def test_wrapper_requeues_on_sigterm_too(tmp_path):
    status, log, calls = wrapper(tmp_path, 30, "ok", signal_after=signal.SIGTERM)
    assert status == 0 and "signal TERM" in log and calls == "requeue 77\n"


def test_wrapper_leaves_a_cancelled_job_cancelled(tmp_path):
    """scancel: SIGTERM, the job shows COMPLETING and slurmstepd's line in its
    log gives no cause. The stage checkpoints; the job is not requeued (the
    real scheduler lets a cancelled job requeue itself, so before this check
    scancel could not stop a job: tests/test_slurm_cluster.py)."""
    job_log = tmp_path / "job.out"
    job_log.write_text(
        "slurmstepd-vm: error: *** JOB 77 ON vm CANCELLED AT 2026-12-04T07:16:08 "
        "DUE TO JOB REQUEUE ***\n"  # an earlier run of the job, requeued
        "slurmstepd-vm: error: *** JOB 77 ON vm CANCELLED AT 2026-12-04T08:00:00 ***\n"
    )
    env = {"FAKE_STATE": "COMPLETING", "FAKE_LOG": str(job_log), "MTKD_OUT": ""}
    env["SLURM_RESTART_COUNT"] = "1"
    status, log, calls = wrapper(
        tmp_path, 30, "ok", signal_after=signal.SIGTERM, extra_env=env
    )
    assert status == 143 and calls == ""
    assert "job 77 was cancelled (scancel): not requeueing" in log


def test_wrapper_requeues_a_job_at_its_time_limit(tmp_path):
    """SIGTERM at the time limit (the SIGUSR1 before it was missed): requeue."""
    job_log = tmp_path / "job.out"
    job_log.write_text(
        "slurmstepd-vm: error: *** JOB 77 ON vm CANCELLED AT 2026-12-04T08:00:00 "
        "DUE TO TIME LIMIT ***\n"
    )
    env = {"FAKE_STATE": "COMPLETING", "FAKE_LOG": str(job_log)}
    status, log, calls = wrapper(
        tmp_path, 30, "ok", signal_after=signal.SIGTERM, extra_env=env
    )
    assert status == 0 and calls == "requeue 77\n"


def test_wrapper_does_not_requeue_a_job_slurm_requeues(tmp_path):
    """`scontrol requeue JOB` from outside (or a pre-emption that requeues):
    SIGTERM, and the restart count is already one more than the job's."""
    env = {"FAKE_STATE": "COMPLETING", "FAKE_RESTARTS": "1"}
    status, log, calls = wrapper(
        tmp_path, 30, "ok", signal_after=signal.SIGTERM, extra_env=env
    )
    assert status == 0 and calls == ""
    assert "SLURM is requeueing job 77 already (restart 1): stopping" in log


def test_wrapper_notes_a_failed_job_with_its_log(tmp_path):
    """A failed job: one line in $MTKD_OUT/failed.txt, with the array task and
    the log SLURM writes it to; no line for a requeue."""
    out = tmp_path / "out"
    out.mkdir()
    env = {
        "MTKD_OUT": str(out), "FAKE_LOG": "/scratch/logs/mtkd-teacher-70_3.out",
        "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_JOB_NAME": "mtkd-teacher",
    }  # fmt: skip
    status, log, calls = wrapper(
        tmp_path, 0, "fail", extra_env=env, report_status=False
    )
    assert status == 3 and calls == ""
    note = (out / "failed.txt").read_text()
    expected = (
        "job 70_3 (mtkd-teacher, array task 3) failed with status 3: "
        "log /scratch/logs/mtkd-teacher-70_3.out"
    )
    assert note.endswith(expected + "\n") and note.count("\n") == 1
    assert expected in log and "are cancelled: fix the cause" in log
    status, _, calls = wrapper(tmp_path, 0, "stop", extra_env=env, report_status=False)
    assert status == 0 and calls == "requeue 77\n"
    assert (out / "failed.txt").read_text() == note  # a requeue is no failure


def test_wrapper_requeues_when_the_stage_asks_without_a_signal(tmp_path):
    """E.g. torchrun: the ranks stopped (status 75) but torchrun says 1; the
    stage's note in MTKD_REQUEUE_FILE decides."""
    status, log, calls = wrapper(tmp_path, 0, "stop")
    assert status == 0 and calls == "requeue 77\n"


def test_wrapper_requeues_a_stage_that_does_not_stop_in_time(tmp_path):
    status, log, calls = wrapper(tmp_path, 4, "ignore", signal_after=signal.SIGUSR1)
    assert "did not stop within 2 s" in log and calls == "requeue 77\n"


def test_wrapper_returns_a_failure_without_requeue(tmp_path):
    status, log, calls = wrapper(tmp_path, 0, "fail")
    assert "returned 3" in log and "failed with status 3" in log and calls == ""


def test_wrapper_gives_up_after_max_requeues(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    status, log, calls = wrapper(
        tmp_path,
        0,
        "stop",
        extra_env={"SLURM_RESTART_COUNT": "5", "MTKD_OUT": str(out)},
        report_status=False,
    )
    assert status == 1 and "giving up" in log and calls == ""
    assert "failed with status 1" in (out / "failed.txt").read_text()


def test_wrapper_outside_slurm_exits_75(tmp_path):
    status, log, calls = wrapper(tmp_path, 0, "stop", extra_env={"SLURM_JOB_ID": ""})
    assert status == 75 and "run the same command again" in log and calls == ""


def fake_run(folder, pers):
    """A teacher run folder whose checkpoints have these valid PERs."""
    model = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(folder / "save", recoverables={"model": model})
    return [ckpt.save_checkpoint(meta={"selection": per}).path for per in pers]


def test_teacher_list_helper(tmp_path):
    """slurm/teacher_list.py: line K = best model.ckpt of run folder K."""
    first = fake_run(tmp_path / "tea0", [40.0, 30.0, 35.0])
    second = fake_run(tmp_path / "tea3", [20.0])
    target = tmp_path / "lists" / "teachers.txt"
    runs = [str(tmp_path / "tea0"), str(tmp_path / "tea3")]
    proc = run([sys.executable, "slurm/teacher_list.py", str(target), *runs])
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in target.read_text().splitlines() if not x.startswith("#")]
    assert lines == [str(first[1] / "model.ckpt"), str(second[0] / "model.ckpt")]
    with pytest.raises(RecipeError, match="no finished teacher there"):
        write_teacher_list(str(target), [str(tmp_path)])
