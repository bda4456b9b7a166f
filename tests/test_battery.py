"""Issue 21's battery of bad inputs and faults, fixed as classes.

Each class has its test: launch options and devices that cannot work here,
values out of range or out of their choices (and SpeechBrain-valid values
accepted), a corpus changed after preparation, audio that is not finite or
empty, damaged checkpoints and store parts, folders that cannot be written,
and SIGINT/SIGTERM mid-epoch and mid-store. Every error is one message naming
the key, file or path; nothing is written before it; a fault is survived.
"""

import errno
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy
import pytest
import soundfile
import torch
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, TINY_RUN, run_script
from test_faults import _can_mount_tmpfs, assert_clean_error, store_command

from mtkd.data import AudioError, load_audio
from mtkd.hparams import HparamsError, check_value_ranges, load_hparams, run_stage
from mtkd.store import StoreError, TeacherStore
from mtkd.teachers import TeacherListError, load_teacher
from mtkd.writable import cannot_write_message
from mtkd_tools.export import read_audio
from timit_prepare import TimitPrepError, prepare_timit

TEA0_YAML = os.path.join(REPO, "hparams/teachers/tea0.yaml")
KD_YAML = os.path.join(REPO, "hparams/train_kd.yaml")


def stage_args(corpus, out, *extra):
    return [
        TEA0_YAML, "--data_folder", corpus, "--output_folder", str(out),
        "--device", "cpu", "--noprogressbar", *TINY_MODEL, *extra,
    ]  # fmt: skip


def refused(capsys, main, argv):
    """Runs a stage's main through run_stage; returns its stderr (exit 2)."""
    with pytest.raises(SystemExit) as stop:
        run_stage(main, argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err
    return err


# ------------------------------------------ 1. devices and launch options


@pytest.mark.parametrize(
    "options, words",
    [
        (["--device", "gpu"], "--device 'gpu' is not a device"),
        (["--device", "cuda:0"], "torch.cuda.is_available() is False"),
        (["--data_parallel_backend"], "--data_parallel_backend needs CUDA GPUs"),
        (["--jit"], "cannot be compiled with TorchScript"),
        (["--grad_accumulation_factor", "0"], "--grad_accumulation_factor must be"),
        (["--compile", "--device", "cpu"], "--compile on cpu: torch.compile"),
    ],
)
def test_launch_options_that_cannot_work_are_refused_before_any_write(
    mini_corpus, tmp_path, capsys, options, words
):
    if options[-1].startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda works here")
    out = tmp_path / "run"
    argv = stage_args(mini_corpus, out)
    argv[argv.index("--device") : argv.index("--device") + 2] = []
    err = refused(capsys, lambda a: load_hparams(a), [*argv, *options])
    assert words in err
    assert not out.exists()


def test_two_cpu_processes_without_a_backend_are_told_to_use_gloo(
    mini_corpus, tmp_path, capsys, monkeypatch
):
    # What torchrun --nproc_per_node=2 sets for each process.
    for key, value in {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    err = refused(capsys, load_hparams, stage_args(mini_corpus, tmp_path / "r"))
    assert "--distributed_backend gloo" in err


def test_torchrun_with_nccl_on_the_cpu_ends_with_the_recipes_message(
    mini_corpus, tmp_path
):
    """Issue 33: torchrun ends a failed job with its own traceback and
    summary, under which the ranks' ERROR line was lost ("To enable traceback
    see: ..."); the ranks now hand it to torchrun, whose summary ends with
    it. (torchrun's own traceback is torchrun's: it stays.)"""
    out = tmp_path / "r"
    proc = run_script(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "train_teacher.py", *stage_args(mini_corpus, out)],
        check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    message = (
        "ERROR: This run has several processes (torchrun) on the CPU, where the "
        "nccl backend (SpeechBrain's default) cannot run: add --distributed_backend "
        "gloo."
    )
    assert lines[-2] == f"  traceback : {message}", lines[-12:]
    assert "To enable traceback see" not in proc.stderr
    assert not out.exists()


def test_jobs_below_1_and_an_output_folder_that_is_a_file_are_refused(tmp_path, capsys):
    """Issue 33: --jobs 0 ended in a ZeroDivisionError traceback, and an
    --output_folder naming a file in one from making the corpus there."""
    import run_demo

    for jobs in ("0", "-2"):
        with pytest.raises(SystemExit) as stop:
            run_demo.parse_args(["--quick", "--jobs", jobs])
        assert stop.value.code == 2
        assert f"--jobs must be 1 or more (runs side by side), got {jobs}" in (
            capsys.readouterr().err
        )
    taken = tmp_path / "demo"
    taken.write_text("not a folder")
    proc = run_script(["run_demo.py", "--quick", "--output_folder", str(taken)],
                      check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        f"ERROR: output_folder {taken} is a file, not a folder: remove or rename "
        "the file, or give another --output_folder."
    )
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("script", ["transcribe.py", "summarize_results.py"])
def test_tools_asked_for_cuda_without_a_gpu_say_so(tmp_path, script):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = {
        "transcribe.py": [str(tmp_path), str(tmp_path), "--device", "cuda"],
        "summarize_results.py": [str(tmp_path), "--cost", "--device", "cuda"],
    }[script]
    proc = run_script([script, *args], check=False)
    assert_clean_error(proc, 2, "--device cuda", "use --device cpu")


# ------------------------------------------------ 2. ranges and choices


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("selection_metric", "WER", "`selection_metric` must be one of PER, CTC_PER"),
        ("num_workers", "-1", "`num_workers` must be 0 or more"),
        ("time_pooling_size", "0", "`time_pooling_size` must be greater than 0"),
        ("rnn_layers", "0", "`rnn_layers` must be greater than 0"),
        ("blank_index", "50", "must be below output_neurons (42)"),
        ("enc_rnn_type", "rnn", "`enc_rnn_type` must be one of ligru, lstm, gru"),
        ("annealing_factor", "-0.5", "`annealing_factor` must be greater than 0"),
        ("annealing_factor", "1.5", "`annealing_factor` must be between 0 and 1"),
        ("bos_index", "1", "must be three different labels"),
        ("cnn_channels", "(4)", "needs one entry per CNN block (cnn_blocks 2)"),
        ("cnn_channels", "(4.5,)", "`cnn_channels` must be a whole number"),
        ("cnn_channels", "abc", "`cnn_channels` must be a list of numbers"),
        # SpeechBrain's run option: -1 trained with gradient ascent (issue 33).
        ("max_grad_norm", "-1", "`max_grad_norm` must be greater than 0, got -1.0"),
        ("max_grad_norm", "0", "To clip nothing, give a large value such as 1e9."),
    ],
)
def test_values_out_of_range_are_named_before_anything_is_built(
    mini_corpus, tmp_path, capsys, key, value, words
):
    out = tmp_path / "run"
    argv = stage_args(mini_corpus, out)
    argv += [f"--{key}", value]
    if value == "(4)":
        argv += ["--cnn_blocks", "2"]  # two blocks, one channel count
    err = refused(capsys, load_hparams, argv)
    assert words in err, err
    assert not out.exists()


def test_a_large_max_grad_norm_is_accepted(mini_corpus, tmp_path):
    argv = stage_args(mini_corpus, tmp_path / "run") + ["--max_grad_norm", "1e9"]
    assert load_hparams(argv).run_opts["max_grad_norm"] == 1e9
    # A value written in a YAML file (SpeechBrain reads it there too).
    with pytest.raises(HparamsError, match="`max_grad_norm` must be greater than 0"):
        check_value_ranges({"max_grad_norm": -1.0}, "child.yaml")


@pytest.mark.parametrize("written", ["(4, 8)", "[4, 8]", "(4, 8,)"])
def test_cnn_channels_as_a_tuple_or_a_list_are_accepted(mini_corpus, tmp_path, written):
    argv = stage_args(mini_corpus, tmp_path / "run") + [
        "--cnn_blocks", "2", "--cnn_channels", written, "--cnn_kernelsize", "(3, 3)",
    ]  # fmt: skip
    hparams = load_hparams(argv).hparams
    assert list(hparams["cnn_channels"]) == [4, 8]
    features = torch.zeros(1, 20, 40)
    encoded, _, _ = hparams["model"](features, torch.ones(1), torch.zeros(1, 3).long())
    assert encoded.shape[0] == 1


# ------------------------------------ 3. the corpus changed after preparation


def test_a_corpus_changed_after_preparation_is_prepared_again(
    mini_corpus, tmp_path, caplog
):
    corpus = tmp_path / "TIMIT"
    shutil.copytree(mini_corpus, corpus)
    out = tmp_path / "prep"
    paths = [str(out / f"{split}.json") for split in ("train", "valid", "test")]
    prepare_timit(str(corpus), *paths)
    before = json.load(open(paths[0]))

    # A .PHN edited: its first phone becomes another one.
    utt = sorted(before)[0]
    phn = before[utt]["wav"].replace("{data_root}", str(corpus))[:-4] + ".PHN"
    lines = open(phn).read().splitlines()
    start, end, phone = lines[1].split()
    new_phone = "sh" if phone != "sh" else "s"
    lines[1] = f"{start} {end} {new_phone}"
    open(phn, "w").write("\n".join(lines) + "\n")
    caplog.set_level(logging.INFO)
    prepare_timit(str(corpus), *paths)
    assert "changed since its manifests were written" in caplog.text
    after = json.load(open(paths[0]))
    assert after[utt]["phn"] != before[utt]["phn"]

    # An utterance added (a copy of one under a new name).
    stem = phn[:-4]
    new_stem = os.path.join(os.path.dirname(stem), "SX999")
    for ext in (".WAV", ".PHN", ".WRD", ".TXT"):
        if os.path.exists(stem + ext):
            shutil.copy(stem + ext, new_stem + ext)
    prepare_timit(str(corpus), *paths)
    assert len(json.load(open(paths[0]))) == len(before) + 1

    # Nothing changed: skipped.
    caplog.clear()
    prepare_timit(str(corpus), *paths)
    assert "already prepared with the same options" in caplog.text


# ---------------------------------------------- 4. audio: not finite, empty


@pytest.mark.parametrize("bad", ["nan", "inf", "empty"])
def test_audio_that_is_not_finite_or_empty_is_refused_naming_the_file(tmp_path, bad):
    samples = numpy.sin(numpy.arange(8000) / 10).astype(numpy.float32) * 0.1
    if bad == "nan":
        samples[100] = numpy.nan
    elif bad == "inf":
        samples[100] = numpy.inf
    else:
        samples = samples[:0]
    path = tmp_path / f"{bad}.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    words = "no audio samples" if bad == "empty" else "NaN or infinite samples"
    with pytest.raises(AudioError, match=words) as err:
        load_audio(str(path), 16000)  # training's reader
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=words.split()[0]):
        read_audio(str(path), 16000)  # transcribe.py's reader


def test_an_empty_recording_in_the_corpus_is_named_by_preparation(
    mini_corpus, tmp_path
):
    corpus = tmp_path / "TIMIT"
    shutil.copytree(mini_corpus, corpus)
    wav = sorted(glob.glob(str(corpus / "TRAIN/*/*/SX*.WAV")))[0]
    soundfile.write(wav, numpy.zeros(0, numpy.int16), 16000, format="NIST")
    with pytest.raises(TimitPrepError) as err:
        prepare_timit(str(corpus), *[str(tmp_path / f"{s}.json") for s in "abc"])
    assert wav in str(err.value) and "no audio samples" in str(err.value)


# -------------------------------------- 5. damaged checkpoints and store parts


def test_a_garbage_model_ckpt_in_a_teacher_list_is_named(tiny_teachers, tmp_path):
    run = tmp_path / "tea0"
    source = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    shutil.copytree(source, run)
    (ckpt,) = glob.glob(str(run / "save/CKPT+*/model.ckpt"))
    with open(ckpt, "wb") as f:
        f.write(os.urandom(4096))
    with pytest.raises(TeacherListError) as err:
        load_teacher(ckpt, line_no=3, list_path="teachers.txt")
    message = str(err.value)
    assert ckpt in message and "cannot be read as a torch checkpoint" in message
    assert "teachers.txt" in message


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_store_part_with_damaged_bytes_is_named(teacher_store, tmp_path, where):
    folder = tmp_path / "store"
    shutil.copytree(teacher_store, folder)
    (part,) = glob.glob(str(folder / "*.h5"))
    assert os.path.exists(part + ".sha256")
    size = os.path.getsize(part)
    offset = {"start": 0, "middle": size // 2, "end": size - 64}[where]
    with open(part, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    with pytest.raises(StoreError) as err:
        TeacherStore(str(folder)).verify()
    assert part in str(err.value)
    assert "damaged" in str(err.value)


def test_a_store_without_checksums_still_reads(teacher_store, tmp_path, caplog):
    folder = tmp_path / "store"
    shutil.copytree(teacher_store, folder)
    (sidecar,) = glob.glob(str(folder / "*.sha256"))
    os.remove(sidecar)  # a store written before checksums
    with caplog.at_level(logging.WARNING, logger="mtkd.store.format"):
        store = TeacherStore(str(folder))
    # Read in full (in another process) and left as it is; the warning gives
    # the command that adds the checksum file.
    assert "has no checksum file (written before checksums existed): it was " in (
        caplog.text
    )
    assert not os.path.exists(sidecar) and store.verify() == 0
    utt = store.utterance_ids("train")[0]
    assert store.get("train", utt)["att_dist"].shape[0] == 2
    command = caplog.text.split("write the file once: ", 1)[1].splitlines()[0]
    subprocess.run(command, shell=True, check=True)
    assert TeacherStore(str(folder)).verify() == 1


def _old_damaged_part(teacher_store, tmp_path):
    """A copy of the store as written before checksums, its part damaged
    inside a dataset (4 kB of train's att_dist overwritten); returns the
    folder and the part's path."""
    folder = tmp_path / "old_store"
    shutil.copytree(teacher_store, folder)
    for sidecar in glob.glob(str(folder / "*.sha256")):
        os.remove(sidecar)
    (part,) = glob.glob(str(folder / "*.h5"))
    with h5py.File(part, "r") as f:  # the first chunk of train's att_dist
        offset = f["train/att_dist"].id.get_chunk_info(0).byte_offset
    with open(part, "r+b") as f:
        f.seek(offset + 64)
        f.write(b"\xff" * 4096)
    return str(folder), part


def test_an_old_store_part_damaged_inside_a_dataset_is_named_at_start_up(
    teacher_store, tmp_path
):
    """Issue 33: a part without a checksum file (written before they existed)
    damaged inside a dataset was read as if whole, and HDF5 could take the
    process down later (glibc "double free or corruption", exit 134, no
    message). It is now read in full in a child process when the store is
    opened: the damage is a StoreError naming the part, and no checksum file
    is written for it."""
    folder, part = _old_damaged_part(teacher_store, tmp_path)
    with pytest.raises(StoreError) as err:
        TeacherStore(folder)
    message = str(err.value)
    assert message.startswith(f"{part} has no checksum file (it was written before")
    # The part is gzip-compressed: HDF5 cannot inflate the damaged chunk.
    assert "cannot be read in full: reading it failed (" in message
    assert "save_teachers.py (--overwrite True)" in message
    assert not os.path.exists(part + ".sha256")
    # Uncompressed, the same bytes read without complaint: the distributions
    # are checked to be probabilities.
    from mtkd.store.format import check_part_without_checksum

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        rows = numpy.full((600, 42), 1 / 42, dtype=numpy.float16)
        rows[100:110] = numpy.nan
        f.create_dataset("train/att_dist", data=rows)
    with pytest.raises(StoreError) as err:
        check_part_without_checksum(str(plain))
    assert "reading it failed (train/att_dist rows 0 to 599 hold values that are " in (
        str(err.value)
    )


def test_a_crash_reading_an_old_part_is_a_message_not_a_crash(
    teacher_store, tmp_path, monkeypatch
):
    """The child process that reads an old part may be killed by what it
    reads (SIGABRT: "double free or corruption"); the stage is not."""
    import mtkd.store.format as store_format

    folder = tmp_path / "store"
    shutil.copytree(teacher_store, folder)
    for sidecar in glob.glob(str(folder / "*.sha256")):
        os.remove(sidecar)
    (part,) = glob.glob(str(folder / "*.h5"))
    crash = "import os, sys; sys.stderr.write('double free or corruption (out)\\n'); "
    monkeypatch.setattr(store_format, "_READ_EVERY_DATASET", crash + "os.abort()")
    with pytest.raises(StoreError) as err:
        TeacherStore(str(folder))
    assert str(err.value).startswith(
        f"{part} has no checksum file (it was written before checksums existed) "
        "and cannot be read in full: the process reading it was killed by "
        "SIGABRT (double free or corruption (out)). The file is damaged"
    )


# ------------------------------------------- 6. folders that cannot be written


def test_an_output_folder_that_is_a_file_is_named(mini_corpus, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    err = refused(capsys, load_hparams, stage_args(mini_corpus, blocker / "tea0"))
    assert f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_cannot_write_message_names_the_path_for_each_kind_of_refusal(tmp_path):
    denied = PermissionError(errno.EACCES, "Permission denied", "/r/a.txt")
    assert "Cannot write /r/a.txt: permission denied" in cannot_write_message(denied)
    read_only = OSError(errno.EROFS, "Read-only file system", "/r/b")
    assert "mounted read-only" in cannot_write_message(read_only)
    h5 = OSError(
        "Unable to synchronously create file (unable to open file: name = "
        "'/s/part-t000.h5.partial', errno = 13, error message = 'Permission denied')"
    )
    assert "Cannot write /s/part-t000.h5.partial" in cannot_write_message(h5)
    assert cannot_write_message(OSError(errno.EIO, "I/O error", "/x")) is None
    assert cannot_write_message(ValueError("x")) is None


needs_mount = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a read-only tmpfs"
)


def run_read_only(folder, commands, tmp_path, setup=()):
    """Runs each argv list of ``commands`` (python scripts, from the repo) in a
    private mount namespace where ``folder`` is a tmpfs that ``setup`` (shell
    lines) fills and that is then made read-only. Returns CompletedProcesses."""
    os.makedirs(folder, exist_ok=True)
    lines = [f"mount -t tmpfs none {folder}", *setup, f"mount -o remount,ro {folder}"]
    for i, command in enumerate(commands):
        argv = " ".join(f"'{a}'" for a in [sys.executable, *command])
        out = tmp_path / f"ro{i}"
        lines.append(f"{argv} >{out}.out 2>{out}.err; echo $? >{out}.rc")
    subprocess.run(
        ["unshare", "-rm", "sh", "-c", "\n".join(lines)],
        cwd=REPO, env=SCRIPT_ENV, timeout=300, check=True,
    )  # fmt: skip
    return [
        subprocess.CompletedProcess(
            command,
            int((tmp_path / f"ro{i}.rc").read_text()),
            (tmp_path / f"ro{i}.out").read_text(),
            (tmp_path / f"ro{i}.err").read_text(),
        )
        for i, command in enumerate(commands)
    ]


@needs_mount
def test_read_only_folders_are_named_for_each_stage(
    mini_corpus, tiny_teachers, teacher_list, tmp_path
):
    ro = tmp_path / "ro"
    finished = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    teacher_again = [
        "train_teacher.py", *stage_args(mini_corpus, ro / "tea0"), *TINY_RUN,
    ]  # fmt: skip
    new_teacher = ["train_teacher.py", *stage_args(mini_corpus, ro / "new"), *TINY_RUN]
    store = store_command(mini_corpus, teacher_list, tmp_path / "s", ro / "store")
    again, new, stored = run_read_only(
        ro,
        [teacher_again, new_teacher, store],
        tmp_path,
        setup=[f"cp -a '{finished}' '{ro}/tea0'"],
    )
    assert_clean_error(again, 2, f"Cannot write in {ro}/tea0")
    assert_clean_error(new, 2, f"Cannot write in {ro}", "output_folder")
    assert_clean_error(stored, 2, f"Cannot write in {ro}", "store_folder")


# --------------------------------------- 7. SIGINT and SIGTERM mid-way


def _signal_when(command, log_path, marker, sig, timeout=240):
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, *command], cwd=REPO, env=SCRIPT_ENV, stdout=log,
            stderr=log,
        )  # fmt: skip
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if marker in open(log_path).read():
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    return proc.wait(timeout=timeout)


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_sigint_mid_epoch_is_one_message_and_the_rerun_finishes(mini_corpus, tmp_path):
    out = tmp_path / "tea0"
    command = ["train_teacher.py", *stage_args(mini_corpus, out), *TINY_RUN]
    status = _signal_when(
        command, tmp_path / "first.log", "Going into epoch 1", signal.SIGINT
    )
    log = (tmp_path / "first.log").read_text()
    assert status == 130, log[-3000:]
    assert "ERROR: interrupted (SIGINT" in log and "Traceback" not in log
    run_script(command)
    assert (out / "per_test.txt").exists()


# The SIGTERM case (exit 75, requeue) runs in .ci/run's slow step, to keep
# the default run under 10 minutes on 2 cores.
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_a_signal_mid_store_leaves_no_part_and_the_rerun_finishes(
    mini_corpus, teacher_list, tmp_path, sig
):
    store = tmp_path / "store"
    command = store_command(mini_corpus, teacher_list, tmp_path / "out", store)
    helper = os.path.join("tests", "kill_after_batches.py")
    name = signal.Signals(sig).name[3:]
    proc = run_script([helper, "1", f"--signal={name}", *command], check=False)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 75}[sig]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not glob.glob(str(store / "*.h5"))
    run_script(command)
    assert len(glob.glob(str(store / "*.h5"))) == 1


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_sigterm_to_the_process_group_mid_epoch_checkpoints_and_exits_75(
    mini_corpus, teacher_store, tmp_path
):
    """SLURM signals the whole process group: the DataLoader workers get
    SIGTERM too. They used to die of it first, and the student exited 1 with
    "DataLoader worker ... is killed by signal: Terminated" and no mid-epoch
    checkpoint; they now leave it to the main process, which checkpoints and
    exits 75 as for SIGUSR1, and the rerun resumes after that batch."""
    out = tmp_path / "kd"
    command = [
        "train_kd.py", KD_YAML, "--data_folder", mini_corpus, "--tea_infer_dir",
        teacher_store, "--output_folder", str(out), "--pretrain", "False",
        "--device", "cpu", "--noprogressbar", "--num_workers", "1",
        "--number_of_epochs", "1", "--batch_size", "4", "--test_beam_size", "2",
        *TINY_MODEL,
    ]  # fmt: skip
    helper = os.path.join("tests", "kill_after_batches.py")
    first = subprocess.run(
        [sys.executable, helper, "3", "--signal=TERM", "--group", *command],
        cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=600,
        start_new_session=True,  # the group signalled is the run's, not pytest's
    )  # fmt: skip
    log = first.stdout + first.stderr
    assert first.returncode == 75, log[-3000:]
    assert "stop signal (SIGTERM): saved an intra-epoch checkpoint" in log
    assert "killed by signal" not in log and "Traceback" not in log
    (meta,) = [
        yaml_file.read_text() for yaml_file in (out / "save").glob("CKPT+*/CKPT.yaml")
    ]
    assert "end-of-epoch: false" in meta
    again = run_script(command)
    assert "Resuming epoch 1 after batch 3 " in again.stdout + again.stderr
    assert (out / "per_test.txt").exists()


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_run(capsys):
    """SIGINT's KeyboardInterrupt raised inside a __del__ can only be printed
    by Python; the flag it leaves stops the stage when it returns (status
    130, the one message) and a store writer at its next batch."""
    import signal as signals

    from mtkd import cluster
    from mtkd.hparams import run_stage
    from mtkd.store.writer import PartWriter

    try:
        cluster.INTERRUPT.signum = signals.SIGINT  # as if the exception was lost
        with pytest.raises(SystemExit) as stop:
            run_stage(lambda argv: "finished", [])
        assert stop.value.code == 130
        assert "ERROR: interrupted (SIGINT" in capsys.readouterr().err
        writer = PartWriter.__new__(PartWriter)
        with pytest.raises(KeyboardInterrupt):
            writer.append(["utt"], [[]])
    finally:
        cluster.INTERRUPT.signum = None
        signals.signal(signals.SIGINT, signals.default_int_handler)
