"""Issue 15: every bad input a clear error, every fault survived.

Each test builds the fault itself (a second writer, a full disk on a small
tmpfs in a private mount namespace, damaged .WAV/.PHN files, a damaged store,
wrong-typed values, a cut-off checkpoint, a long recording, a redone epoch)
and checks the exit status, that no traceback is printed, that the message
names the file or key, and that nothing is lost.
"""

import glob
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy
import pytest
import soundfile
import torch
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, TINY_RUN, run_script

from mtkd.data import AudioError, load_audio
from mtkd.store import StoreError, TeacherStore
from mtkd_tools.export import split_at_silences
from timit_prepare import prepare_timit

STORE_YAML = os.path.join(REPO, "hparams/save_teachers.yaml")
KD_YAML = os.path.join(REPO, "hparams/train_kd.yaml")
TEA0_YAML = os.path.join(REPO, "hparams/teachers/tea0.yaml")


def assert_clean_error(proc, status, *names):
    """Exit ``status``, no traceback, one ERROR line naming every ``names``."""
    assert proc.returncode == status, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert errors, proc.stderr[-3000:]
    for name in names:
        assert str(name) in proc.stderr, (name, proc.stderr[-3000:])


def store_command(corpus, teacher_list, out, store):
    return [
        "save_teachers.py", STORE_YAML, "--data_folder", corpus,
        "--tea_models_dir", teacher_list, "--output_folder", str(out),
        "--store_folder", str(store), "--device", "cpu", "--noprogressbar",
    ]  # fmt: skip


# ------------------------------------------------------------ 1. two writers


def _stopped(pid):
    """Whether process ``pid`` is stopped (state T in /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def test_second_store_writer_is_refused_and_the_first_finishes(
    mini_corpus, teacher_list, tmp_path
):
    store = tmp_path / "store"
    command = store_command(mini_corpus, teacher_list, tmp_path / "a", store)
    # The first writer stops itself after its first batch, holding its part.
    helper = os.path.join(REPO, "tests", "kill_after_batches.py")
    first = subprocess.Popen(
        [sys.executable, helper, "1", "--stop", *command],
        cwd=REPO, env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not _stopped(first.pid) and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert _stopped(first.pid), "the first writer never reached its first batch"
    assert (store / "part-t000-t001.h5.lock").exists()
    try:
        partial_before = sorted(os.listdir(store))
        # Same store, its own output folder: refused before touching anything.
        second = run_script(
            store_command(mini_corpus, teacher_list, tmp_path / "b", store),
            check=False,
        )
        assert_clean_error(second, 2, store / "part-t000-t001.h5", f"pid {first.pid}")
        assert sorted(os.listdir(store)) == partial_before
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert sorted(os.listdir(store)) == [
        "part-t000-t001.h5",
        "part-t000-t001.h5.sha256",
    ]
    assert TeacherStore(str(store)).teacher_count == 2


# ------------------------------------------- 1b. two runs in one run folder


def teacher_command(corpus, out, *extra):
    return [
        "train_teacher.py", TEA0_YAML, "--data_folder", corpus,
        "--output_folder", str(out), "--device", "cpu", "--noprogressbar",
        *TINY_MODEL, *TINY_RUN, *extra,
    ]  # fmt: skip


def test_a_second_run_in_a_run_folder_is_refused_and_the_first_finishes(
    mini_corpus, tmp_path
):
    """Two trainings on one output folder used to both exit 0, logging every
    epoch twice and deleting each other's checkpoints."""
    out = tmp_path / "tea0"
    command = teacher_command(mini_corpus, out)
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(
            [sys.executable, *command], cwd=REPO, env=SCRIPT_ENV, stdout=log,
            stderr=log,
        )  # fmt: skip
    deadline = time.time() + 240
    while "Going into epoch 1" not in log_path.read_text() and time.time() < deadline:
        assert first.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # holds the folder while the second starts
    try:
        assert (out / "run.lock").read_text().startswith(f"pid {first.pid} on ")
        second = run_script(command, check=False)
        assert_clean_error(second, 2, f"{out} is in use by another run", "pid")
        assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "another --output_folder" in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, log_path.read_text()[-3000:]
    train_log = (out / "train_log.txt").read_text()
    assert re.findall(r"^epoch: (\d+)", train_log, re.M) == ["1"]
    assert not (out / "run.lock").exists()  # released at the end


def _lock_file(folder, text):
    os.makedirs(folder, exist_ok=True)
    (folder / "run.lock").write_text(text)


def test_a_run_lock_held_or_left_behind_is_refused_or_taken_over(
    tmp_path, monkeypatch, caplog
):
    """The lock of a live run is refused; that of a process of this host that
    has ended, or of this SLURM job before its requeue, is taken over with a
    message; that of another host is refused with the way to remove it."""
    from mtkd.runs import RunLock, RunLockError

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    folder = tmp_path / "run"
    held = RunLock(folder).acquire()
    try:
        with pytest.raises(RunLockError) as err:
            RunLock(folder).acquire()
        assert f"{folder} is in use by another run (pid {os.getpid()} on " in str(
            err.value
        )
    finally:
        held.release()
    assert not (folder / "run.lock").exists()

    # kill -9 leaves the file of a process that runs no more: taken over.
    ended = subprocess.Popen(["true"])
    ended.wait()
    old = f"pid {ended.pid} on {socket.gethostname()}, started x: train_kd.py"
    _lock_file(folder, old)
    with caplog.at_level(logging.WARNING, logger="mtkd.runs"):
        RunLock(folder).acquire().release()
    assert f"taking over the run lock of {old}: that process has ended" in caplog.text

    # A live process of this host running the recorded command: refused.
    sleeper = subprocess.Popen(["sleep", "60"])
    while not open(f"/proc/{sleeper.pid}/cmdline", "rb").read():
        time.sleep(0.01)  # until it runs sleep
    try:
        live = f"pid {sleeper.pid} on {socket.gethostname()}, started x: sleep 60"
        _lock_file(folder, live)
        with pytest.raises(RunLockError) as err:
            RunLock(folder).acquire()
        assert live in str(err.value) and f"rm {folder}/run.lock" in str(err.value)
        assert (folder / "run.lock").read_text() == live  # left as it was
    finally:
        sleeper.kill()
        sleeper.wait()

    # Another host: cannot be checked from here.
    other = "pid 4321 on node-elsewhere (SLURM job 4242), started x: train_kd.py"
    _lock_file(folder, other)
    with pytest.raises(RunLockError) as err:
        RunLock(folder).acquire()
    assert f"{folder} is locked by a run on another host" in str(err.value)
    assert f"remove the lock file (rm {folder}/run.lock)" in str(err.value)
    # The same SLURM job, requeued onto this host: it gets its lock back.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtkd.runs"):
        lock = RunLock(folder).acquire()
    assert "taking the run lock back from the same SLURM job 4242" in caplog.text
    assert "(SLURM job 4242)" in (folder / "run.lock").read_text()
    lock.release()


DDP_LOCK_SCRIPT = """
import os, sys, torch.distributed as dist
from mtkd.runs import RunLockError, lock_run_folder
dist.init_process_group("gloo")
try:
    lock = lock_run_folder(sys.argv[1])
    print("locked" if lock else "rank without lock")
except RunLockError as err:
    print("refused:", err)
dist.barrier()
"""


def test_under_ddp_the_main_process_takes_the_run_lock_and_all_ranks_stop(tmp_path):
    """Rank 0 alone writes run.lock; when it is refused, every rank is told
    (none goes on to train alone)."""
    from mtkd.runs import RunLock

    folder = tmp_path / "run"

    def launch():
        port = str(29500 + os.getpid() % 1000)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", DDP_LOCK_SCRIPT, str(folder)],
                cwd=REPO,
                env={
                    **SCRIPT_ENV,
                    "RANK": str(rank),
                    "WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for rank in range(2)
        ]
        return [p.communicate(timeout=120)[0].strip() for p in procs]

    assert launch() == ["locked", "rank without lock"]
    assert not (folder / "run.lock").exists()  # released when rank 0 exits
    held = RunLock(folder).acquire()
    try:
        main, other = launch()
    finally:
        held.release()
    assert main.startswith(f"refused: {folder} is in use by another run (pid ")
    assert other.startswith(f"refused: {folder} is in use by another run: the main")


# ------------------------------------------------------------- 2. full disk


def _can_mount_tmpfs():
    probe = "mount -t tmpfs -o size=64k none /mnt 2>/dev/null || exit 1"
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", probe], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


needs_tmpfs = pytest.mark.skipif(
    not _can_mount_tmpfs(),
    reason="needs `unshare -rm` to mount a small tmpfs (a full disk)",
)


def run_on_small_disk(mount_point, size, commands, tmp_path):
    """Runs shell ``commands`` (a list of argv lists, each run from the repo)
    in a private mount namespace where ``mount_point`` is a tmpfs of ``size``;
    "remount SIZE" grows it. Returns a CompletedProcess per command."""
    os.makedirs(mount_point, exist_ok=True)
    lines = [f"mount -t tmpfs -o size={size} none {shlex.quote(str(mount_point))}"]
    for i, command in enumerate(commands):
        if command[0] == "remount":
            lines.append(
                f"mount -o remount,size={command[1]} {shlex.quote(str(mount_point))}"
            )
            continue
        argv = " ".join(shlex.quote(a) for a in [sys.executable, *command])
        out = tmp_path / f"cmd{i}"
        lines.append(f"{argv} >{out}.out 2>{out}.err; echo $? >{out}.rc")
        lines.append(f"ls -A {shlex.quote(str(mount_point))} -R >{out}.ls")
    subprocess.run(
        ["unshare", "-rm", "sh", "-c", "\n".join(lines)],
        cwd=REPO, env=SCRIPT_ENV, timeout=600, check=True,
    )  # fmt: skip
    results = []
    for i, command in enumerate(commands):
        if command[0] == "remount":
            continue
        out = tmp_path / f"cmd{i}"
        results.append(
            subprocess.CompletedProcess(
                command,
                int((tmp_path / f"cmd{i}.rc").read_text()),
                (tmp_path / f"cmd{i}.out").read_text(),
                (tmp_path / f"cmd{i}.err").read_text(),
            )
        )
        results[-1].listing = (tmp_path / f"cmd{i}.ls").read_text()
    return results


@needs_tmpfs
def test_full_disk_while_writing_the_store_stops_at_once_and_resumes(
    mini_corpus, teacher_list, tmp_path
):
    disk = tmp_path / "disk"
    store = disk / "store"
    command = store_command(mini_corpus, teacher_list, tmp_path / "out", store)
    full, resumed = run_on_small_disk(
        disk, "120k", [command, ["remount", "64m"], command], tmp_path
    )
    assert_clean_error(full, 2, "The disk is full", store / "part-t000-t001.h5")
    assert len(full.stderr.splitlines()) < 40  # one message, not pages of them
    # Nothing that reads as complete, nothing half-written left behind.
    assert ".h5" not in full.listing
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "part-t000-t001.h5" in resumed.listing
    assert "Teacher store" in resumed.stdout


@needs_tmpfs
def test_full_disk_while_saving_a_checkpoint_says_so(mini_corpus, tmp_path):
    disk = tmp_path / "disk"
    command = [
        "train_teacher.py", TEA0_YAML, "--data_folder", mini_corpus,
        "--output_folder", str(tmp_path / "run"), "--save_folder", str(disk / "save"),
        "--device", "cpu", "--noprogressbar", *TINY_MODEL, *TINY_RUN,
    ]  # fmt: skip
    # Room for the label encoder and model config, not for a ~1.3 MB checkpoint.
    (full,) = run_on_small_disk(disk, "200k", [command], tmp_path)
    assert_clean_error(full, 2, "The disk is full", disk / "save")
    assert "unexpected pos" not in full.stderr
    assert "CKPT+" not in full.listing  # the unfinished checkpoint is removed
    assert "model_config.json" in full.listing  # what was written is kept


# ----------------------------------------------------- 3. audio, .PHN files


def _set_sphere_field(path, field, value):
    """Rewrites one field of a 1024-byte NIST SPHERE header in place."""
    with open(path, "r+b") as f:
        head = f.read(1024).decode("ascii")
        new = re.sub(rf"^{field} -i \S+", f"{field} -i {value}", head, flags=re.M)
        new = new[:1024].ljust(1024, " ")
        f.seek(0)
        f.write(new.encode("ascii"))


@pytest.fixture
def damaged_corpus(mini_corpus, tmp_path):
    """A copy of the mini corpus with four bad .WAV and two bad .PHN files."""
    corpus = tmp_path / "TIMIT"
    shutil.copytree(mini_corpus, corpus)
    wavs = sorted(glob.glob(str(corpus / "TRAIN/*/*/S[XI]*.WAV")))
    bad = dict(zip(["8k", "cut", "stereo", "header"], wavs[:4], strict=True))
    _set_sphere_field(bad["8k"], "sample_rate", 8000)
    size = os.path.getsize(bad["cut"])
    with open(bad["cut"], "r+b") as f:  # a quarter of the samples are left
        f.truncate(1024 + (size - 1024) // 4)
    _set_sphere_field(bad["stereo"], "channel_count", 2)
    with open(bad["header"], "r+b") as f:  # the header's size field garbled
        f.seek(8)
        f.write(b"  xx\n")
    phns = [p[:-4] + ".PHN" for p in wavs[4:6]]
    reversed_lines = open(phns[0]).read().splitlines()
    start, end, phone = reversed_lines[1].split()
    reversed_lines[1] = f"{end} {start} {phone}"
    open(phns[0], "w").write("\n".join(reversed_lines) + "\n")
    past_lines = open(phns[1]).read().splitlines()
    start, end, phone = past_lines[-1].split()
    past_lines[-1] = f"{start} {int(end) + 99999} {phone}"
    open(phns[1], "w").write("\n".join(past_lines) + "\n")
    return corpus, bad, phns


def test_preparation_names_every_bad_audio_file_and_writes_nothing(
    damaged_corpus, tmp_path
):
    corpus, bad, phns = damaged_corpus
    proc = run_script(
        ["timit_prepare.py", str(corpus), str(tmp_path / "prep")], check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "4 audio file(s)" in proc.stderr
    for path, words in zip(
        bad.values(),
        ["sample rate 8000 Hz", "cut off", "2 channels", "SPHERE header size"],
        strict=True,
    ):
        line = next(x for x in proc.stderr.splitlines() if path in x)
        assert words in line, line
    assert not (tmp_path / "prep").exists()  # nothing written


def test_label_times_that_do_not_fit_are_a_counted_warning(
    mini_corpus, damaged_corpus, tmp_path, caplog
):
    corpus, bad, phns = damaged_corpus
    for path in bad.values():  # restore the audio, keep the two bad .PHN
        shutil.copyfile(os.path.join(mini_corpus, os.path.relpath(path, corpus)), path)
    paths = [str(tmp_path / f"{s}.json") for s in ("train", "valid", "test")]
    prepare_timit(str(corpus), *paths)
    warning = "\n".join(
        r.getMessage() for r in caplog.records if r.levelname == "WARNING"
    )
    assert "2 .PHN file(s) have label times" in warning
    assert phns[0] in warning and "not after start" in warning
    assert phns[1] in warning and "past the audio" in warning
    assert all(os.path.isfile(p) for p in paths)


def test_data_pipeline_names_audio_it_cannot_use(mini_corpus, tmp_path):
    wav = sorted(glob.glob(os.path.join(mini_corpus, "TRAIN/*/*/SX*.WAV")))[0]
    samples, rate = soundfile.read(wav, dtype="float32")
    good = load_audio(wav, 16000, len(samples) / rate)
    assert good.shape == (len(samples),)
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, numpy.stack([samples, samples], 1), rate)
    slow = tmp_path / "slow.wav"
    soundfile.write(slow, samples[::2], 8000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    cases = [
        (stereo, None, "2 channels"),
        (slow, None, "8000 Hz"),
        (broken, None, "cannot read the audio"),
        (wav, 4 * len(samples) / rate, "cut off"),
    ]
    for path, duration, words in cases:
        with pytest.raises(AudioError, match=re.escape(str(path))) as err:
            load_audio(str(path), 16000, duration)
        assert words in str(err.value)


def test_audio_damaged_after_preparation_stops_training_with_its_name(
    mini_corpus, tmp_path
):
    corpus = tmp_path / "TIMIT"
    shutil.copytree(mini_corpus, corpus)
    out = tmp_path / "run"
    base = [
        "train_teacher.py", TEA0_YAML, "--data_folder", str(corpus),
        "--output_folder", str(out), "--device", "cpu", "--noprogressbar",
        *TINY_MODEL, *TINY_RUN,
    ]  # fmt: skip
    prepare = [sys.executable, "-c", (
        "import sys; sys.path.insert(0, '.'); from timit_prepare import prepare_timit;"
        f"prepare_timit({str(corpus)!r}, *[{str(out)!r} + f'/{{s}}.json' for s in "
        "('train', 'valid', 'test')])"
    )]  # fmt: skip
    subprocess.run(prepare, cwd=REPO, env=SCRIPT_ENV, check=True)
    # The corpus changes after preparation: a training file becomes stereo.
    train = json.load(open(out / "train.json"))
    victim = train[sorted(train)[0]]["wav"].replace("{data_root}", str(corpus))
    samples, rate = soundfile.read(victim, dtype="int16")
    soundfile.write(victim, numpy.stack([samples, samples], 1), rate, format="NIST")
    # In a data-loading worker, as a real run reads its batches.
    proc = run_script([*base, "--num_workers", "1"], check=False)
    assert_clean_error(proc, 2, victim, "2 channels")


# ------------------------------------------------------------ 4. the store


def _damaged_copy(teacher_store, tmp_path, damage):
    folder = tmp_path / "store"
    shutil.copytree(teacher_store, folder)
    (part,) = glob.glob(str(folder / "*.h5"))
    with h5py.File(part, "r+") as f:
        damage(f)
    # As a store written before checksums: the checksum would name any such
    # edit first; these tests check what the reader itself finds.
    os.remove(part + ".sha256")
    return str(folder), part


def _drop_valid(f):
    del f["valid"]


def _drop_att_dist(f):
    del f["train/att_dist"]


def _drop_an_utterance(f):
    ids = [u.decode() for u in f["train/utt_ids"][()]]
    ids[0] = "NOT_AN_UTTERANCE"
    del f["train/utt_ids"]
    f["train"].create_dataset("utt_ids", data=ids, dtype=h5py.string_dtype())


@pytest.mark.parametrize(
    "damage, words",
    [
        (_drop_valid, "has no 'valid' group"),
        (_drop_att_dist, "lacks the dataset(s) att_dist"),
        (_drop_an_utterance, "lacks 1 train utterance(s)"),
    ],
)
def test_damaged_store_is_named_at_start_up(teacher_store, tmp_path, damage, words):
    folder, part = _damaged_copy(teacher_store, tmp_path, damage)
    manifest = os.path.join(os.path.dirname(teacher_store), "train.json")
    with pytest.raises(StoreError) as err:
        TeacherStore(folder).check_manifest("train", manifest)
    assert part in str(err.value) and words in str(err.value)
    if damage is _drop_an_utterance:
        (original,) = glob.glob(os.path.join(teacher_store, "*.h5"))
        with h5py.File(original, "r") as f:
            dropped = f["train/utt_ids"][0].decode()
        assert dropped in str(err.value)


def test_store_missing_an_utterance_stops_train_kd_before_training(
    mini_corpus, teacher_store, tmp_path
):
    folder, part = _damaged_copy(teacher_store, tmp_path, _drop_an_utterance)
    proc = run_script(
        ["train_kd.py", KD_YAML, "--data_folder", mini_corpus, "--tea_infer_dir",
         folder, "--output_folder", str(tmp_path / "kd"), "--pretrain", "False",
         "--device", "cpu", "--noprogressbar", "--num_workers", "0", *TINY_MODEL,
         *TINY_RUN],
        check=False,
    )  # fmt: skip
    assert_clean_error(proc, 2, part, "lacks 1 train utterance(s)")
    assert not glob.glob(str(tmp_path / "kd/save/CKPT+*"))


# ------------------------------------------------------- 5. and 8. values


@pytest.mark.parametrize(
    "key, value", [("batch_size", "abc"), ("lr", "abc"), ("number_of_epochs", "abc")]
)
def test_wrong_typed_value_is_named_before_anything_is_written(
    mini_corpus, tmp_path, key, value
):
    out = tmp_path / "run"
    proc = run_script(
        ["train_teacher.py", TEA0_YAML, "--data_folder", mini_corpus,
         "--output_folder", str(out), "--device", "cpu", f"--{key}", value],
        check=False,
    )  # fmt: skip
    assert_clean_error(proc, 2, f"`{key}` must be a number", "'abc'", "command line")
    assert not out.exists()  # no hyperparams.yaml with `batch_size: abc`


def test_temperature_zero_is_an_invalid_value_not_a_store_mismatch(
    mini_corpus, teacher_store, tmp_path
):
    out = tmp_path / "kd"
    proc = run_script(
        ["train_kd.py", KD_YAML, "--data_folder", mini_corpus, "--tea_infer_dir",
         teacher_store, "--output_folder", str(out), "--temperature", "0"],
        check=False,
    )  # fmt: skip
    assert_clean_error(proc, 2, "`temperature` must be greater than 0")
    assert "store" not in proc.stderr.lower()
    assert not out.exists()


# -------------------------------------------------- 6. a cut-off checkpoint


def test_export_of_a_cut_off_checkpoint_names_the_file(tiny_teachers, tmp_path):
    experiment = tmp_path / "tea0"
    source = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    shutil.copytree(source, experiment)
    (model_ckpt,) = glob.glob(str(experiment / "save/CKPT+*/model.ckpt"))
    size = os.path.getsize(model_ckpt)
    with open(model_ckpt, "r+b") as f:
        f.truncate(size // 2)
    target = tmp_path / "model"
    proc = run_script(
        ["export_model.py", "--from", str(experiment), "--to", str(target)],
        check=False,
    )
    assert_clean_error(proc, 2, model_ckpt, "damaged or cut off")
    assert not target.exists() and not glob.glob(str(target) + ".partial*")


# ------------------------------------------------------ 7. long recordings


def test_long_recording_is_cut_into_bounded_chunks_at_pauses():
    rate = 16000
    rng = numpy.random.default_rng(3)
    # 47 s: 2.7 s of "speech" (noise), then 0.3 s of silence, repeated.
    speech, pause = rng.normal(0, 0.3, int(2.7 * rate)), numpy.zeros(int(0.3 * rate))
    wav = torch.tensor(numpy.tile(numpy.concatenate([speech, pause]), 16)[: 47 * rate])
    chunks = split_at_silences(wav, rate, max_seconds=8.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(wav)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    lengths = [(end - start) / rate for start, end in chunks]
    assert all(4.0 <= s <= 8.0 for s in lengths), lengths
    assert len(chunks) >= 6
    for _, cut in chunks[:-1]:  # every cut falls in a pause
        assert float(wav[cut - 80 : cut + 80].abs().max()) == 0.0
    # A recording no longer than the limit stays whole.
    assert split_at_silences(wav[: 8 * rate], rate, 8.0) == [(0, 8 * rate)]


def test_transcribe_decodes_a_long_recording_in_chunks(tiny_teachers, tmp_path):
    experiment = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    model = tmp_path / "model"
    run_script(["export_model.py", "--from", experiment, "--to", str(model)])
    test = json.load(open(os.path.join(experiment, "test.json")))
    data_root = _data_root(experiment)
    pieces = [
        soundfile.read(e["wav"].replace("{data_root}", data_root), dtype="float32")[0]
        for e in test.values()
    ]
    long = numpy.concatenate([numpy.concatenate([p, numpy.zeros(4000, "float32")])
                              for p in pieces] * 2)  # fmt: skip
    path = tmp_path / "long.wav"
    soundfile.write(path, long, 16000)
    seconds = len(long) / 16000
    proc = run_script(
        ["transcribe.py", str(model), str(path), "--json", "--chunk_seconds", "4",
         "--device", "cpu"],
    )  # fmt: skip
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["duration"] == pytest.approx(seconds, abs=0.01)
    assert seconds / 4 <= record["chunks"] <= seconds / 2 + 1
    assert len(record["phones"].split()) > record["chunks"]
    assert "--chunk_seconds" in run_script(["transcribe.py", "--help"]).stdout


def test_speech_segments_leave_silence_and_long_pauses_out():
    """Energy alone: digital silence and a steady noise floor hold no speech;
    a pause of a second or more splits the speech, a shorter one does not."""
    from mtkd_tools.export import (
        PAUSE_MARGIN_SECONDS,
        join_transcripts,
        speech_segments,
    )

    rate = 16000
    rng = numpy.random.default_rng(5)
    assert speech_segments(torch.zeros(60 * rate), rate) == []
    hiss = torch.tensor(rng.normal(0, 1e-3, 60 * rate), dtype=torch.float32)
    assert speech_segments(hiss, rate) == []
    loud = torch.tensor(rng.normal(0, 0.3, 60 * rate), dtype=torch.float32)
    assert speech_segments(loud, rate) == [(0, 60 * rate)]  # no pause at all

    def burst(seconds):
        noise = rng.normal(0, 0.1, int(seconds * rate))
        return torch.tensor(noise, dtype=torch.float32)

    def gap(seconds):
        return torch.zeros(int(seconds * rate)) + hiss[: int(seconds * rate)]

    # 2 s quiet, 1 s burst, 0.4 s pause, 1 s burst, 5 s pause, 1 s burst, 3 s.
    parts = [gap(2), burst(1), gap(0.4), burst(1), gap(5), burst(1), gap(3)]
    wav = torch.cat(parts)
    margin = int(PAUSE_MARGIN_SECONDS * rate)
    first, second = speech_segments(wav, rate)
    assert first == (2 * rate - margin, int(4.4 * rate) + margin)
    assert second == (int(9.4 * rate) - margin, int(10.4 * rate) + margin)
    joined = join_transcripts(["sil", "sil a b sil", "", "sil", "sil c"])
    assert joined == "sil a b sil c"


def test_transcribe_is_quick_and_short_on_silence_and_long_pauses(
    tiny_teachers, tmp_path
):
    """Issue 33: 60 s of silence took 51 s and came out as about 3,200
    tokens (a weak model's attention search never stops there); now it is
    "sil", searched not at all, and a long recording's long pauses are one
    sil each, its speech decoded as before."""
    experiment = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    model = tmp_path / "model"
    run_script(["export_model.py", "--from", experiment, "--to", str(model)])
    test = json.load(open(os.path.join(experiment, "test.json")))
    data_root = _data_root(experiment)
    wavs = [e["wav"].replace("{data_root}", data_root) for e in test.values()][:3]
    pieces = [soundfile.read(path, dtype="float32")[0] for path in wavs]
    silence = numpy.zeros(16000 * 60, "float32")
    soundfile.write(tmp_path / "silence60.wav", silence, 16000)
    soundfile.write(tmp_path / "silence5.wav", silence[: 5 * 16000], 16000)
    pause = numpy.zeros(16000 * 8, "float32")  # between utterances: a sil each
    talk = numpy.concatenate([pause, pieces[0], pause, pieces[1], pause, pieces[2]])
    soundfile.write(tmp_path / "talk.wav", talk, 16000)
    files = [str(tmp_path / n) for n in ("silence60.wav", "silence5.wav", "talk.wav")]
    proc = run_script(
        ["transcribe.py", str(model), *files, *wavs, "--json", "--device", "cpu"]
    )
    records = {r["path"]: r for r in map(json.loads, proc.stdout.splitlines())}
    for path in files[:2]:
        assert (records[path]["phones"], records[path]["chunks"]) == ("sil", 0)
    # The long recording: its three utterances searched, one piece each, the
    # pauses a sil each; as many phones as the utterances decoded alone, give
    # or take a sil at each join and what the margins of silence change.
    talked = records[files[2]]
    assert talked["chunks"] == 3
    alone = sum(len(records[w]["phones"].split()) for w in wavs)
    assert talked["phones"].startswith("sil ")
    assert abs(len(talked["phones"].split()) - alone) <= 6 + alone // 5


def _data_root(experiment):
    """The corpus folder an experiment was prepared from."""
    with open(os.path.join(experiment, "hyperparams.yaml")) as f:
        return re.search(r"^data_folder: (.*)$", f.read(), re.M).group(1).strip()


# ------------------------------------- 8. an epoch redone after a kill


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_epoch_redone_after_a_killed_checkpoint_save_counts_in_wall_time(
    tiny_teachers, tmp_path
):
    source = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    run = tmp_path / "tea0"
    shutil.copytree(source, run)
    # A kill during the save of epoch 1's checkpoint leaves it unpublished:
    # CKPT.yaml is written last (AtomicCheckpointer), as ".pending".
    for meta in glob.glob(str(run / "save/CKPT+*/CKPT.yaml")):
        os.rename(meta, meta + ".pending")
    # The killed run never reached its test: no test line, no per_test.txt.
    log = (run / "train_log.txt").read_text().splitlines(True)
    (run / "train_log.txt").write_text(
        "".join(line for line in log if not line.startswith("Epoch loaded"))
    )
    os.remove(run / "per_test.txt")
    data_root = _data_root(str(run))
    run_script(
        ["train_teacher.py", TEA0_YAML, "--data_folder", data_root,
         "--output_folder", str(run), "--device", "cpu", "--noprogressbar",
         *TINY_MODEL, *TINY_RUN],
    )  # fmt: skip
    log = (run / "train_log.txt").read_text()
    # SpeechBrain logs values under 1 as "8.00e-01": read the exponent too.
    times = [float(t) for t in re.findall(r"time_s: ([-+0-9.eE]+)", log)]
    assert len(re.findall(r"^epoch: 1,", log, re.M)) == 2  # epoch 1 ran twice
    proc = run_script(["summarize_results.py", str(run), "--out", str(tmp_path)])
    results = json.load(open(tmp_path / "results.json"))
    (row,) = results["runs"]
    assert row["wall_time_s"] == pytest.approx(sum(times), abs=0.15)
    assert "Traceback" not in proc.stderr
