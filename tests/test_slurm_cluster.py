"""slurm/ against a real SLURM: a one-node cluster on this machine started by
slurm/local_cluster.sh (munged, slurmctld, slurmd as root), the tiny mini
corpus, tiny models, CPU only. tests/test_slurm.py covers the same scripts
with stand-in sbatch/scontrol commands.

The cluster tests are marked ``slurm`` and left out of the default run:
``pytest -m slurm``. Where the daemons cannot run (packages slurm-wlm and
munge not installed, not root) they are skipped with the reason. The first
tests (local_cluster.sh's usage errors, no daemons) run by default.

There is no accounting database (no sacct): the tests read the jobs' states
with ``scontrol show job`` (finished jobs stay visible for an hour,
MinJobAge) and the jobs' logs. A requeued job is held by SLURM for about two
minutes before it may start again (BeginTime); the tests release it 2.5 s
after it is pending with ``scontrol update JobId=... StartTime=now``.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch
import yaml
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, TINY_RUN, run_script

from mtkd.store.reader import TeacherStore

SLURM = os.path.join(REPO, "slurm")
LOCAL_CLUSTER = os.path.join(SLURM, "local_cluster.sh")
SUBMIT = os.path.join(SLURM, "submit_all.sh")
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
    "PREEMPTED", "BOOT_FAIL", "DEADLINE",
}  # fmt: skip
# The teacher of the requeue tests: 2 epochs of 24 batches, long enough to be
# signalled while it trains (about 3 s an epoch on the 2-core VM).
LONG_TEACHER = [*TINY_MODEL, "--number_of_epochs", "2", "--batch_size", "2"]
LONG_TEACHER += ["--test_beam_size", "2"]
LONG_TEACHER_BATCHES = 48


def local_cluster(*args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("MTKD_")}
    full.update(env)
    return subprocess.run(
        [LOCAL_CLUSTER, *args], env=full, capture_output=True, text=True, timeout=60
    )


def test_local_cluster_says_what_to_install():
    """Without the daemons (none on PATH here, whether or not installed):
    which programs and packages are missing, and the apt-get line."""
    proc = local_cluster("status", PATH="/usr/bin:/bin", MTKD_SLURM_SBIN="")
    assert proc.returncode == 3
    missing = re.search(
        r"SLURM is not installed here: missing ([\w ]+) \(", proc.stderr
    )
    assert {"munged", "mungekey", "slurmctld", "slurmd"} <= set(missing[1].split())
    assert "(packages: munge slurm-wlm)" in proc.stderr
    assert "apt-get install -y slurm-wlm munge" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["restart"], {}, "unknown command 'restart': use start, stop, status or env"),
        ([], {}, "unknown command '': use start, stop, status or env"),
        (["status"], {"MTKD_SLURM_PORT": "68170"}, "MTKD_SLURM_PORT must be a port"),
        (["start"], {"MTKD_SLURM_TIMEOUT": "1m"}, "MTKD_SLURM_TIMEOUT must be seconds"),
    ],
)
def test_local_cluster_refuses_bad_usage(args, env, message):
    proc = local_cluster(*args, **env)
    assert proc.returncode == 2 and message in proc.stderr


def test_local_cluster_env_and_help():
    proc = local_cluster("env", MTKD_SLURM_DIR="/tmp/x-cluster")
    assert proc.stdout == "export SLURM_CONF=/tmp/x-cluster/slurm.conf\n"
    help_text = local_cluster("--help").stdout
    assert "apt-get" not in help_text and "MTKD_SLURM_DIR" in help_text
    assert "slurm/local_cluster.sh start" in help_text


def free_port_pair():
    """A port P with P and P + 1 free (slurmctld and slurmd)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports found")


@pytest.fixture(scope="module")
def cluster(request):
    """Starts a one-node cluster for this module (its own folder and ports),
    stops it at the end; returns the environment for the SLURM commands.
    The folder (daemon logs) is kept when a test failed."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurm/local_cluster.sh)")
    # munged wants every folder above its socket searchable by all, which
    # pytest's own temporary folders are not: a folder directly in /tmp.
    folder = tempfile.mkdtemp(prefix="mtkd-slurm-test-", dir="/tmp")
    env = {k: v for k, v in SCRIPT_ENV.items() if not k.startswith("MTKD_")}
    env.update(MTKD_SLURM_DIR=folder, MTKD_SLURM_PORT=str(free_port_pair()))
    env.update(MTKD_SLURM_TIMEOUT="90")
    status = subprocess.run(
        [LOCAL_CLUSTER, "status"], env=env, capture_output=True, text=True
    )
    if status.returncode == 3:  # packages missing: the message says which
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(status.stderr.strip().replace("\n", " "))
    start = subprocess.run(
        [LOCAL_CLUSTER, "start"], env=env, capture_output=True, text=True, timeout=180
    )
    if start.returncode != 0:
        subprocess.run([LOCAL_CLUSTER, "stop"], env=env, capture_output=True)
        raise AssertionError(
            f"slurm/local_cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
        )
    env["SLURM_CONF"] = os.path.join(folder, "slurm.conf")
    assert f"export SLURM_CONF={env['SLURM_CONF']}" in start.stdout
    failed_before = request.session.testsfailed
    yield env
    stop = subprocess.run(
        [LOCAL_CLUSTER, "stop"], env=env, capture_output=True, text=True, timeout=120
    )
    assert stop.returncode == 0, stop.stderr
    if request.session.testsfailed == failed_before:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"\nthe local cluster's folder (daemon logs) is kept: {folder}")


def slurm_cmd(env, *args, check=True):
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def job_records(env, job_id):
    """`scontrol show job -o JOB`: one dict per job, or per array task."""
    out = slurm_cmd(env, "scontrol", "show", "job", "-o", str(job_id))
    records = []
    for line in out.splitlines():
        if line.strip():
            records.append(dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)))
    return records


def task_states(env, job_id):
    """{array task id (or None): record} of one submitted job."""
    return {r.get("ArrayTaskId"): r for r in job_records(env, job_id)}


def settled(record):
    """Finished, or requeued and waiting for its BeginTime."""
    state = record["JobState"]
    return state in FINAL_STATES or (
        state == "PENDING" and record.get("Reason") == "BeginTime"
    )


def wait_jobs(env, job_ids, timeout=420):
    """Waits until every task of these jobs has settled; returns
    {job id: {task: record}}."""
    deadline = time.time() + timeout
    while True:
        states = {j: task_states(env, j) for j in job_ids}
        if all(settled(r) for tasks in states.values() for r in tasks.values()):
            return states
        if time.time() > deadline:
            raise AssertionError(
                f"jobs not done after {timeout} s:\n"
                + slurm_cmd(env, "squeue", "-o", "%i %j %T %r", check=False)
            )
        time.sleep(1)


def wait_for(predicate, what, env, timeout=240, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    queue = slurm_cmd(env, "squeue", "-o", "%i %j %T %r %S", check=False)
    jobs = slurm_cmd(env, "scontrol", "show", "job", check=False)
    tail = ""
    if log is not None and os.path.exists(log):
        tail = "\n" + open(log).read()[-4000:]
    raise AssertionError(
        f"timed out waiting for {what}\nsqueue:\n{queue}\n{jobs}\nlog:{tail}"
    )


def count_in(path, text):
    return open(path).read().count(text) if os.path.exists(path) else 0


def release_requeued(env, task, restarts):
    """Waits for the requeued task to be pending (restart count given), then
    lets it start 2.5 s later instead of in two minutes; returns when it runs.

    Not at once: slurmd refuses to launch a job again within the second its
    credential was revoked by the requeue ("Job credential revoked", the job
    then FAILS with no output); SLURM's own two-minute hold avoids that."""

    def state():
        (record,) = job_records(env, task)
        assert record["Restarts"] in (str(restarts - 1), str(restarts)), record
        return record["JobState"], record["Reason"], record["Restarts"]

    wait_for(
        lambda: state() == ("PENDING", "BeginTime", str(restarts)),
        f"{task} pending after restart {restarts}",
        env,
        timeout=90,
    )
    time.sleep(2.5)  # (StartTime=now+N would wait for the next scheduler pass)
    slurm_cmd(env, "scontrol", "update", f"JobId={task}", "StartTime=now")
    wait_for(lambda: state()[0] != "PENDING", f"{task} to start again", env, 60)
    assert state()[0] == "RUNNING", state()


def recipe_env(cluster, corpus, out, **settings):
    """Environment for submit_all.sh: CPU only, tiny models, 1 CPU per job."""
    env = dict(cluster)
    tiny = " ".join(TINY_MODEL + TINY_RUN)
    env.update(
        MTKD_DATA=corpus, MTKD_OUT=str(out), MTKD_CPUS="1", MTKD_MEM="1G",
        MTKD_TEACHER_GPUS="0", MTKD_STORE_GPUS="0", MTKD_KD_GPUS="0",
        MTKD_TEACHER_TIME="20:00", MTKD_STORE_TIME="10:00",
        MTKD_MERGE_TIME="10:00", MTKD_KD_TIME="20:00",
        MTKD_TEACHERS="0,3", MTKD_TEACHER_ARGS=tiny, MTKD_KD_ARGS=tiny,
    )  # fmt: skip
    # The jobs set up Python as on a cluster (the default MTKD_ENV_SETUP
    # sources the recipe's .venv) when the tests run in that venv.
    venv = os.path.join(REPO, ".venv")
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        env.update(MTKD_ENV_SETUP=":", MTKD_PYTHON=sys.executable)
    env.update(settings)
    return env


def submit_all(env):
    """Runs submit_all.sh; returns ({job name: id}, output)."""
    proc = subprocess.run(
        [SUBMIT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = dict(
        (name, job)
        for job, name in re.findall(
            r"^submitted job (\d+): .*--job-name=(\S+)", proc.stdout, re.M
        )
    )
    return ids, proc.stdout


def log_of(out, name, job, task=None):
    suffix = f"{job}_{task}" if task is not None else job
    return os.path.join(out, "logs", f"{name}-{suffix}.out")


def assert_all_completed(states):
    for job, tasks in states.items():
        for task, record in tasks.items():
            assert record["JobState"] == "COMPLETED", (job, task, record)
            assert record["ExitCode"] == "0:0", (job, task, record)


def snapshot(*folders):
    """{path: (mtime_ns, sha256)} of every file under the folders."""
    seen = {}
    for folder in folders:
        paths = [folder] if os.path.isfile(folder) else []
        for root, _, files in os.walk(folder):
            paths += [os.path.join(root, f) for f in files]
        for path in paths:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            seen[path] = (os.stat(path).st_mtime_ns, digest)
    return seen


# ---------------------------------------------------------------------------
# The whole recipe


@pytest.fixture(scope="module")
def recipe(cluster, mini_corpus, tmp_path_factory):
    """submit_all.sh with teachers 0 and 3 and the merge, run to the end."""
    out = tmp_path_factory.mktemp("slurm_recipe")
    env = recipe_env(cluster, mini_corpus, out, MTKD_MERGE="1")
    started = time.time()
    ids, output = submit_all(env)
    states = wait_jobs(env, ids.values())
    return {
        "env": env, "out": str(out), "ids": ids, "output": output,
        "states": states, "seconds": time.time() - started,
    }  # fmt: skip


def stamp(value):
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))


@pytest.mark.slurm
def test_submit_all_runs_every_stage_in_order(recipe):
    ids, states, out = recipe["ids"], recipe["states"], recipe["out"]
    assert list(ids) == ["mtkd-teacher", "mtkd-store", "mtkd-merge", "mtkd-kd"]
    assert_all_completed(states)
    teachers, store = states[ids["mtkd-teacher"]], states[ids["mtkd-store"]]
    assert sorted(teachers) == ["0", "3"] and sorted(store) == ["0", "1"]
    # afterok: each stage started after every task of the one before ended.
    order = [teachers, store, states[ids["mtkd-merge"]], states[ids["mtkd-kd"]]]
    for before, after in zip(order, order[1:], strict=False):
        ended = max(stamp(r["EndTime"]) for r in before.values())
        assert min(stamp(r["StartTime"]) for r in after.values()) >= ended
    # Every job's log, where submit_all.sh put it, says it completed.
    logs = [log_of(out, "mtkd-teacher", ids["mtkd-teacher"], k) for k in (0, 3)]
    logs += [log_of(out, "mtkd-store", ids["mtkd-store"], p) for p in (0, 1)]
    logs += [log_of(out, n, ids[n]) for n in ("mtkd-merge", "mtkd-kd")]
    for path in logs:
        assert "] complete: " in open(path).read(), path
    for k in (0, 3):
        assert re.match(
            r"PER: [0-9.]+", open(f"{out}/teachers/tea{k}/per_test.txt").read()
        )
    assert os.path.exists(f"{out}/teacher_store_merged.h5")
    assert os.path.exists(f"{out}/student_weighted/per_test.txt")
    assert not os.path.exists(f"{out}/failed.txt")
    print(f"recipe on the local cluster: {recipe['seconds']:.0f} s")


def assert_same_store(one, other):
    """The same utterances and exactly the same targets and PERs."""
    assert one.teacher_count == other.teacher_count == 2
    for split in ("train", "valid", "test"):
        assert sorted(one.utterance_ids(split)) == sorted(other.utterance_ids(split))
        assert one.corpus_per(split) == other.corpus_per(split)
        for utt in one.utterance_ids(split):
            a, b = one.get(split, utt), other.get(split, utt)
            assert torch.equal(a["att_dist"], b["att_dist"]), utt
            assert [h.tolist() for h in a["ctc_hyps"]] == [
                h.tolist() for h in b["ctc_hyps"]
            ]
            assert torch.equal(a["ctc_per"], b["ctc_per"])
            assert torch.equal(a["att_per"], b["att_per"])


def per_lines(text):
    return re.findall(r"^\s*teacher \d: CTC PER .*$", text, re.M)


@pytest.mark.slurm
def test_store_and_student_are_what_the_stages_give_by_hand(
    recipe, mini_corpus, tmp_path
):
    """save_teachers.py and train_kd.py run by hand on the teachers that
    SLURM trained give the same store (parts and merged file) and the same
    student (weights, test report, train log)."""
    out = recipe["out"]
    hand = tmp_path / "store"
    proc = run_script(
        [
            "save_teachers.py", "hparams/save_teachers.yaml",
            "--data_folder", mini_corpus, "--tea_models_dir", f"{out}/teachers.txt",
            "--output_folder", str(hand), "--device", "cpu", "--noprogressbar",
        ]
    )  # fmt: skip
    by_hand = TeacherStore(str(hand / "store"))
    assert_same_store(TeacherStore(f"{out}/teacher_store"), by_hand)
    assert_same_store(TeacherStore(f"{out}/teacher_store_merged.h5"), by_hand)
    merge_log = open(log_of(out, "mtkd-merge", recipe["ids"]["mtkd-merge"])).read()
    assert len(per_lines(proc.stdout)) == 6  # 2 teachers x 3 splits
    assert per_lines(merge_log) == per_lines(proc.stdout)

    teacher0 = [
        line
        for line in open(f"{out}/teachers.txt").read().splitlines()
        if line and not line.startswith("#")
    ][0]
    student = tmp_path / "student"
    run_script(
        [
            "train_kd.py", "hparams/train_kd.yaml", "--data_folder", mini_corpus,
            "--tea_infer_dir", str(hand / "store"), "--pretrain", "True",
            "--pretrain_st_dir", teacher0, "--strategy", "weighted",
            "--output_folder", str(student), "--noprogressbar",
            "--precision", "fp32", "--eval_precision", "fp32", "--device", "cpu",
            *TINY_MODEL, *TINY_RUN,
        ]
    )  # fmt: skip
    slurm_student = f"{out}/student_weighted"
    assert (student / "per_test.txt").read_text() == open(
        f"{slurm_student}/per_test.txt"
    ).read()

    def log_without_times(path):
        return re.sub(r"time_s: [0-9.e+-]+", "", open(path).read())

    assert log_without_times(student / "train_log.txt") == log_without_times(
        f"{slurm_student}/train_log.txt"
    )
    (mine,) = student.glob("save/CKPT+*/model.ckpt")
    (theirs,) = [
        p for p in os.listdir(f"{slurm_student}/save") if p.startswith("CKPT+")
    ]
    a = torch.load(mine, map_location="cpu")
    b = torch.load(f"{slurm_student}/save/{theirs}/model.ckpt", map_location="cpu")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slurm
def test_submitting_again_redoes_nothing(recipe):
    """The finished recipe submitted again: the jobs run, find their work
    done and end at once; no checkpoint, store or report changes."""
    out, env = recipe["out"], recipe["env"]
    kept = [f"{out}/teachers/tea0", f"{out}/teachers/tea3", f"{out}/teacher_store"]
    kept += [f"{out}/teacher_store_merged.h5", f"{out}/student_weighted"]
    before = snapshot(*kept)
    started = time.time()
    ids, _ = submit_all(env)
    states = wait_jobs(env, ids.values(), timeout=180)
    assert_all_completed(states)
    logs = [log_of(out, "mtkd-teacher", ids["mtkd-teacher"], k) for k in (0, 3)]
    logs += [log_of(out, "mtkd-store", ids["mtkd-store"], p) for p in (0, 1)]
    logs += [log_of(out, n, ids[n]) for n in ("mtkd-merge", "mtkd-kd")]
    for path in logs:
        text = open(path).read()
        assert "already complete" in text and "] running: " not in text, path
    assert snapshot(*kept) == before
    print(f"resubmission: {time.time() - started:.0f} s")


@pytest.mark.slurm
def test_unlabelled_audio_adds_one_job_and_the_student_learns_from_it(recipe):
    """MTKD_UNLABELLED=timit_sa on the finished recipe (another strategy, so
    another student): the teachers, store parts and merge are reused; one job
    after the store array writes the unlabelled part of both teachers (the
    tiny corpus's 12 SA1/SA2 utterances) into the store folder; the student
    waits for it, reads the folder (not the merged file, MTKD_MERGE=1) and
    trains on train + that audio."""
    out = recipe["out"]
    env = dict(recipe["env"], MTKD_UNLABELLED="timit_sa", MTKD_STRATEGY="average")
    started = time.time()
    ids, _ = submit_all(env)
    assert list(ids) == [
        "mtkd-teacher", "mtkd-store", "mtkd-unlabelled", "mtkd-merge", "mtkd-kd",
    ]  # fmt: skip
    states = wait_jobs(env, ids.values())
    assert_all_completed(states)
    (unlabelled,), (kd,) = (
        states[ids[n]].values() for n in ("mtkd-unlabelled", "mtkd-kd")
    )
    store_end = max(stamp(r["EndTime"]) for r in states[ids["mtkd-store"]].values())
    assert stamp(unlabelled["StartTime"]) >= store_end
    assert stamp(kd["StartTime"]) >= stamp(unlabelled["EndTime"])
    logs = [log_of(out, "mtkd-store", ids["mtkd-store"], p) for p in (0, 1)]
    logs += [log_of(out, "mtkd-merge", ids["mtkd-merge"])]
    for path in logs:
        assert "already complete" in open(path).read(), path
    unlabelled_log = open(log_of(out, "mtkd-unlabelled", ids["mtkd-unlabelled"])).read()
    assert "] complete: " in unlabelled_log and "--teacher_index" not in unlabelled_log
    assert "Skipping teachers [0]" in unlabelled_log  # the labelled parts reused

    store_folder = f"{out}/teacher_store"
    assert os.path.exists(f"{store_folder}/unlabelled-t000-t001.h5")
    teachers = TeacherStore(store_folder)
    assert teachers.has_unlabelled and teachers.teacher_count == 2
    assert len(teachers.utterance_ids("unlabelled")) == 12
    teachers.close()
    kd_log = open(log_of(out, "mtkd-kd", ids["mtkd-kd"])).read()
    assert f"--tea_infer_dir {store_folder} " in kd_log
    assert "--unlabelled timit_sa" in kd_log
    with open(f"{out}/student_average/data_seen.json") as f:
        seen = json.load(f)
    assert seen["labelled"]["utterances"] == 48
    assert seen["unlabelled"]["utterances"] + seen["unlabelled_empty_consensus"] == 12
    assert os.path.exists(f"{out}/student_average/per_test.txt")
    assert not os.path.exists(f"{out}/failed.txt")
    print(f"recipe with unlabelled audio: {time.time() - started:.0f} s")


# ---------------------------------------------------------------------------
# Requeue, pre-emption signal, requeue limit


def stops_and_resumes(log_text):
    stops = re.findall(
        r"intra-epoch checkpoint at epoch (\d+) after batch (\d+)", log_text
    )
    resumes = re.findall(r"Resuming epoch (\d+) after batch (\d+)", log_text)
    return stops, resumes


def epochs_logged(folder):
    log = open(os.path.join(folder, "train_log.txt")).read()
    return [int(e) for e in re.findall(r"^epoch: (\d+)", log, re.M)]


@pytest.mark.slurm
def test_teacher_requeued_and_preempted_resumes_and_the_limit_holds(
    cluster, mini_corpus, tmp_path
):
    """A teacher task is (1) requeued by `scontrol requeue` while it trains,
    (2) sent the pre-emption signal as SLURM sends it before a time limit
    (`scancel --signal=USR1 --batch`): it checkpoints and requeues itself,
    (3) signalled again with MTKD_MAX_REQUEUES=2 reached: it gives up, the
    job fails, the store and student jobs are cancelled and failed.txt says
    so; (4) submitting again resumes the teacher, which finishes, and the
    rest of the chain runs. Every run after the first resumed where the last
    one stopped: no epoch is trained twice."""
    out = tmp_path / "out"
    env = recipe_env(
        cluster, mini_corpus, out, MTKD_TEACHERS="0", MTKD_MAX_REQUEUES="2",
        MTKD_TEACHER_ARGS=" ".join(LONG_TEACHER), MTKD_STOP_GRACE="60",
    )  # fmt: skip
    ids, _ = submit_all(env)
    job = ids["mtkd-teacher"]
    task = f"{job}_0"
    log = log_of(out, "mtkd-teacher", job, 0)

    # (1) scontrol requeue while training: SIGTERM to the whole job.
    wait_for(lambda: count_in(log, "Going into epoch 1") == 1, "training", env, log=log)
    slurm_cmd(env, "scontrol", "requeue", task)
    release_requeued(env, task, 1)
    # (2) the signal SLURM sends before a time limit (--signal=B:USR1@120).
    wait_for(lambda: count_in(log, "Resuming epoch") == 1, "resume 1", env, log=log)
    slurm_cmd(env, "scancel", "--signal=USR1", "--batch", task)
    release_requeued(env, task, 2)
    # (3) once more: the requeue limit (2) is reached.
    wait_for(lambda: count_in(log, "Resuming epoch") == 2, "resume 2", env, log=log)
    slurm_cmd(env, "scancel", "--signal=USR1", "--batch", task)
    states = wait_jobs(env, ids.values())
    text = open(log).read()
    (teacher,) = states[job].values()
    assert teacher["JobState"] == "FAILED" and teacher["Restarts"] == "2", teacher
    assert "DUE TO JOB REQUEUE" in text  # slurmstepd's line for (1)
    assert "SLURM is requeueing job" in text and "already (restart 1)" in text
    assert "SIGUSR1: asking the stage to checkpoint and stop" in text
    assert "(restart 2)" in text
    assert "requeued 2 times already (MTKD_MAX_REQUEUES): giving up" in text
    for name in ("mtkd-store", "mtkd-kd"):
        for record in states[ids[name]].values():
            assert record["JobState"] == "CANCELLED", record
            assert record["Reason"] == "DependencyNeverSatisfied", record
    failed = (out / "failed.txt").read_text()
    assert f"job {task} (mtkd-teacher, array task 0) failed with status 1" in failed
    assert f"log {log}" in failed
    assert not (out / "teachers" / "tea0" / "per_test.txt").exists()

    # (4) submitted again: the teacher resumes from its checkpoint.
    ids2, output = submit_all(env)
    assert "earlier failures (moved to" in output and task in output
    states = wait_jobs(env, ids2.values())
    assert_all_completed(states)
    log2 = log_of(out, "mtkd-teacher", ids2["mtkd-teacher"], 0)
    runs = text + open(log2).read()
    stops, resumes = stops_and_resumes(runs)
    assert len(stops) == 3 and resumes == stops  # each run went on from the last
    assert runs.count("Would load a checkpoint here, but none found yet") == 1
    teacher_out = out / "teachers" / "tea0"
    assert epochs_logged(teacher_out) == [1, 2]
    brains = [
        yaml.safe_load((c / "brain.ckpt").read_text())
        for c in (teacher_out / "save").glob("CKPT+*")
        if (c / "CKPT.yaml").exists()
    ]
    assert max(b["optimizer_step"] for b in brains) == LONG_TEACHER_BATCHES
    assert (out / "student_weighted" / "per_test.txt").exists()
    assert not (out / "failed.txt").exists()


# ---------------------------------------------------------------------------
# A job the node cannot run, a failing task, a cancelled task


@pytest.mark.slurm
def test_a_job_the_node_cannot_run_is_refused_at_submission(
    cluster, mini_corpus, tmp_path
):
    """4 CPUs per job on a node with fewer: sbatch refuses it (the local
    cluster enforces the limits at submission; without that the job would
    pend for ever, Reason=PartitionConfig) and submit_all.sh stops, with
    nothing submitted."""
    if os.cpu_count() >= 4:
        pytest.skip("needs a node with fewer than 4 CPUs")
    env = recipe_env(cluster, mini_corpus, tmp_path / "out", MTKD_CPUS="4")
    proc = subprocess.run(
        [SUBMIT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "More processors requested than permitted" in proc.stderr
    assert "submit_all.sh: sbatch refused the job above" in proc.stderr
    assert "--job-name=mtkd-teacher" in proc.stderr
    assert "already submitted" not in proc.stderr and "submitted job" not in (
        proc.stdout
    )
    assert slurm_cmd(env, "squeue", "-h", "-o", "%i") == ""


@pytest.mark.slurm
def test_failed_and_cancelled_tasks_stop_the_chain_and_say_where(
    cluster, mini_corpus, tmp_path
):
    """Teacher 3 cannot run (its output folder is a file); teacher 0 is
    cancelled with scancel while it trains. The cancelled task stays
    cancelled (it is not requeued), the store and student jobs are cancelled
    (DependencyNeverSatisfied: no job is left pending for ever), and
    failed.txt names the failed task and its log."""
    out = tmp_path / "out"
    (out / "teachers").mkdir(parents=True)
    (out / "teachers" / "tea3").write_text("not a folder\n")
    env = recipe_env(
        cluster, mini_corpus, out, MTKD_TEACHER_ARGS=" ".join(LONG_TEACHER)
    )
    ids, output = submit_all(env)
    assert f"{out}/failed.txt" in output  # the user is told where to look
    job = ids["mtkd-teacher"]
    log0, log3 = (log_of(out, "mtkd-teacher", job, k) for k in (0, 3))
    wait_for(
        lambda: count_in(log0, "Going into epoch 1") == 1, "training", env, log=log0
    )
    slurm_cmd(env, "scancel", f"{job}_0")
    states = wait_jobs(env, ids.values())
    teachers = states[job]
    assert teachers["0"]["JobState"] == "CANCELLED", teachers["0"]
    assert teachers["0"]["Restarts"] == "0"
    assert "was cancelled (scancel): not requeueing" in open(log0).read()
    assert teachers["3"]["JobState"] == "FAILED" and teachers["3"]["ExitCode"] == "2:0"
    for name in ("mtkd-store", "mtkd-kd"):
        for record in states[ids[name]].values():
            assert record["JobState"] == "CANCELLED", record
            assert record["Reason"] == "DependencyNeverSatisfied", record
    assert slurm_cmd(env, "squeue", "-h", "-o", "%i") == ""
    (line,) = (out / "failed.txt").read_text().splitlines()
    assert f"job {job}_3 (mtkd-teacher, array task 3) failed with status 2" in line
    assert line.endswith(f"log {log3}")
    text3 = open(log3).read()
    assert "is a file, not a folder" in text3 and "Traceback" not in text3
    assert "are cancelled: fix the cause, then run slurm/submit_all.sh again" in text3
