"""A stage's inputs (issue 34): a bad command line named as such, inputs
checked before anything is written, the options' new names."""

import os
import re

import pytest
from conftest import REPO, run_script

import save_teachers
import train_kd
import train_teacher
from mtkd.hparams import HparamsError, load_hparams, run_stage
from mtkd.stage_help import stage_help

TEA0_YAML = os.path.join(REPO, "hparams/teachers/tea0.yaml")
SAVE_YAML = os.path.join(REPO, "hparams/save_teachers.yaml")
KD_YAML = os.path.join(REPO, "hparams/train_kd.yaml")


def refused(capsys, main, argv, one_line=True):
    """Runs a stage's main as its script does; returns its ERROR message (one
    line, unless it lists several files)."""
    with pytest.raises(SystemExit) as stop:
        run_stage(main, argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or not one_line, err
    return err.strip()


@pytest.fixture
def data_folder(tmp_path):
    """A folder standing for TIMIT: these runs stop before reading it."""
    folder = tmp_path / "TIMIT"
    folder.mkdir()
    return str(folder)


# ---------------------------------------- errors that point the right way


def test_a_misspelt_option_is_named_with_the_right_one(capsys, data_folder, tmp_path):
    """`--tea_model_dir` is an unknown option, not `tea_models_dir` without a
    value."""
    err = refused(
        capsys,
        save_teachers.main,
        [SAVE_YAML, "--data_folder", data_folder, "--tea_model_dir", "x",
         "--output_folder", str(tmp_path / "out")],
    )  # fmt: skip
    assert err.startswith(
        "ERROR: Unknown option `--tea_model_dir` (from the command line): "
    )
    assert "Did you mean --tea_models_dir (also --teacher_list)?" in err
    assert "has no value" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_option_names_the_file_the_user_gave(
    capsys, data_folder, monkeypatch
):
    monkeypatch.chdir(REPO)
    err = refused(
        capsys,
        train_kd.main,
        ["hparams/train_kd.yaml", "--data_folder", data_folder, "--stratgy", "x"],
    )
    assert err == (
        "ERROR: Unknown option `--stratgy` (from the command line): neither "
        "hparams/train_kd.yaml nor its base hparams/teacher.yaml has such a "
        "top-level key. Did you mean --strategy?"
    )


def test_a_stage_run_without_its_yaml_says_so(tmp_path):
    proc = run_script(["train_teacher.py", "--data_folder", str(tmp_path)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ERROR: No hyperparameter file given (--data_folder {tmp_path} first): "
        "the first argument is the stage's hyperparameter file, e.g. `python "
        "train_teacher.py hparams/teachers/tea0.yaml --data_folder /path/to/TIMIT`."
    )
    assert "Hyperparameter file not found" not in proc.stderr


def test_a_folder_or_a_missing_file_as_the_yaml_says_what_the_first_argument_is(
    capsys, data_folder, tmp_path
):
    err = refused(capsys, train_teacher.main, [data_folder, "--data_folder", "x"])
    assert f"{data_folder} is a folder, not a hyperparameter file: the first " in err
    missing = str(tmp_path / "tea0.yml")
    err = refused(capsys, train_teacher.main, [missing, "--data_folder", "x"])
    assert err.startswith(f"ERROR: Hyperparameter file not found: {missing} (the ")


# ------------------------------------------ inputs before anything is written


def bad_teacher_list(tmp_path):
    path = tmp_path / "bad_teachers.txt"
    path.write_text(str(tmp_path / "gone" / "model.ckpt") + "\n")
    return str(path)


@pytest.mark.parametrize(
    "case", ["no data", "no list", "bad list", "no store", "no checkpoint",
             "no unlabelled"],
)  # fmt: skip
def test_missing_inputs_stop_the_stage_before_it_writes_anything(
    capsys, data_folder, tmp_path, case
):
    out = tmp_path / "out"
    common = ["--output_folder", str(out), "--device", "cpu"]
    store = ["--tea_infer_dir", data_folder, "--pretrain", "False"]
    main, argv, words = {
        "no data": (
            train_teacher.main,
            [TEA0_YAML, "--data_folder", str(tmp_path / "nope")],
            f"--data_folder {tmp_path / 'nope'}: no such folder. Give the TIMIT "
            "folder that holds TRAIN and TEST. Nothing was written.",
        ),
        "no list": (
            save_teachers.main,
            [SAVE_YAML, "--data_folder", data_folder, "--teacher_list",
             str(tmp_path / "teachers.txt")],
            f"--teacher_list {tmp_path / 'teachers.txt'}: no such file. Give the "
            "teacher list file",
        ),
        "bad list": (
            save_teachers.main,
            [SAVE_YAML, "--data_folder", data_folder, "--teacher_list",
             bad_teacher_list(tmp_path)],
            f"{tmp_path / 'bad_teachers.txt'} line 1 ({tmp_path / 'gone'}",
        ),
        "no store": (
            train_kd.main,
            [KD_YAML, "--data_folder", data_folder, "--tea_infer_dir",
             str(tmp_path / "store"), "--pretrain", "False"],
            f"--tea_infer_dir {tmp_path / 'store'}: no such file or folder. Give "
            "the teacher store that save_teachers.py wrote",
        ),
        "no checkpoint": (
            train_kd.main,
            [KD_YAML, "--data_folder", data_folder, "--tea_infer_dir", data_folder,
             "--pretrain_checkpoint", str(tmp_path / "model.ckpt")],
            f"--pretrain_checkpoint {tmp_path / 'model.ckpt'}: no such file or "
            "folder. Give a teacher's model.ckpt (or its run folder)",
        ),
        "no unlabelled": (
            train_kd.main,
            [KD_YAML, "--data_folder", data_folder, *store, "--unlabelled",
             str(tmp_path / "recordings")],
            f"--unlabelled {tmp_path / 'recordings'}: no such folder or manifest",
        ),
    }[case]  # fmt: skip
    err = refused(capsys, main, [*argv, *common])
    assert words in err, err
    assert not out.exists()  # no env.log, hyperparams.yaml, save/ or manifests


def test_every_unlabelled_file_is_checked_before_a_teacher_runs(
    capsys, mini_corpus, teacher_list, tmp_path
):
    """A recording at 8 kHz is named before the labelled parts are written,
    not after the teachers have run over the whole corpus."""
    import numpy
    import soundfile

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    tone = numpy.sin(numpy.arange(8000) / 5).astype(numpy.float32) * 0.1
    soundfile.write(recordings / "phone_call.wav", tone, 8000)
    store = tmp_path / "out" / "store"
    err = refused(
        capsys,
        save_teachers.main,
        [SAVE_YAML, "--data_folder", mini_corpus, "--teacher_list", teacher_list,
         "--output_folder", str(tmp_path / "out"), "--device", "cpu",
         "--noprogressbar", "--unlabelled", str(recordings)],
        one_line=False,
    )  # fmt: skip
    assert "phone_call.wav" in err and "8000 Hz" in err
    assert not store.exists() or not os.listdir(store)  # no part written


# ------------------------------------------------------ option names


def test_the_new_option_names_set_the_original_keys(data_folder, tmp_path):
    teachers = tmp_path / "teachers.txt"
    teachers.write_text("# none yet\n")
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"")
    for name in ("--teacher_list", "--tea_models_dir"):
        loaded = load_hparams(
            [SAVE_YAML, "--data_folder", data_folder, name, str(teachers)]
        )
        assert loaded.hparams["tea_models_dir"] == str(teachers)
    for name in ("--pretrain_checkpoint", "--pretrain_st_dir"):
        loaded = load_hparams(
            [KD_YAML, "--data_folder", data_folder, "--tea_infer_dir", data_folder,
             "--output_folder", str(tmp_path / "kd"), name, str(checkpoint)]
        )  # fmt: skip
        assert loaded.hparams["pretrain_st_dir"] == str(checkpoint)
    with pytest.raises(HparamsError, match="are one option .* keep --teacher_list"):
        load_hparams(
            [SAVE_YAML, "--data_folder", data_folder, "--teacher_list", "a",
             "--tea_models_dir", "b"]
        )  # fmt: skip
    with pytest.raises(HparamsError) as err:
        load_hparams([SAVE_YAML, "--data_folder", data_folder])
    assert str(err.value) == (
        f"{SAVE_YAML}: `teacher_list` has no value. Give it on the command line, "
        "e.g. `--teacher_list /path/to/...`."
    )


def test_help_lists_the_new_names_with_the_original_ones():
    text = stage_help("save_teachers.py", SAVE_YAML, "Stage 2.")
    (line,) = [row for row in text.splitlines() if "tea_models_dir" in row]
    assert re.fullmatch(
        r"  --teacher_list +\(required\)  \(or --tea_models_dir, its original name\)",
        line,
    )
    text = stage_help("train_kd.py", KD_YAML, "Stage 3.")
    original = r"^  --pretrain_checkpoint +None  \(or --pretrain_st_dir, its original"
    assert re.search(original, text, re.M)


def test_a_demo_folder_made_with_an_original_option_name_is_reused(tmp_path):
    """run_demo.py now writes --teacher_list; a store folder it made with
    --tea_models_dir is still the same run, another list is not."""
    from run_demo import DemoError, Job, check_same_command

    def store_job(option, teachers="teachers.txt"):
        argv = ["save_teachers.py", "hparams/save_teachers.yaml", option, teachers]
        return Job("save_teachers", argv, str(tmp_path), str(tmp_path / "done"))

    check_same_command(store_job("--tea_models_dir"))  # an older demo's folder
    check_same_command(store_job("--teacher_list"))
    with pytest.raises(DemoError, match="was made by another command"):
        check_same_command(store_job("--teacher_list", "other.txt"))
