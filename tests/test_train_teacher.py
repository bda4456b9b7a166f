"""Stage 1: teacher training at test size, resume, and the hyperparameter files."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, run_script
from speechbrain.dataio.encoder import CTCTextEncoder

from mtkd.hparams import HparamsError, load_hparams, resolve_base
from mtkd.model import CTCAttentionASR

TEACHERS = [f"hparams/teachers/tea{k}.yaml" for k in range(10)]


def read_per(path):
    """The PER figure of a per_test.txt report."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return float(re.match(r"PER: ([0-9.]+)", first).group(1))


def test_trained_teacher_leaves_what_stage_two_needs(tiny_teachers):
    ckpt = tiny_teachers[0]
    assert ckpt.endswith("model.ckpt") and os.path.isfile(ckpt)
    ckpt_dir = os.path.dirname(ckpt)
    save = os.path.dirname(ckpt_dir)
    output = os.path.dirname(save)
    assert os.path.basename(ckpt_dir).startswith("CKPT+")
    assert os.path.isfile(os.path.join(ckpt_dir, "normalize.ckpt"))
    # The PER report holds a real figure (a 1-epoch model is bad, not absent).
    per = read_per(os.path.join(output, "per_test.txt"))
    assert 0 < per < 1000
    # Label encoder: blank/bos/eos plus the 39 phones, in a fixed order.
    encoder = CTCTextEncoder()
    encoder.load(os.path.join(save, "label_encoder.txt"))
    assert len(encoder) == 42
    assert [encoder.ind2lab[i] for i in (0, 1, 2, 3, 41)] == [
        "<bos>",
        "<eos>",
        "<blank>",
        "aa",
        "z",
    ]
    config = json.load(open(os.path.join(save, "model_config.json")))
    assert config["model"]["rnn_neurons"] == 16  # the override was applied
    assert config["model"]["dec_rnn_type"] == "gru"
    assert config["features"] == {"sample_rate": 16000, "n_fft": 400, "n_mels": 40}
    # The saved config rebuilds a model that takes the checkpoint's weights.
    model = CTCAttentionASR(**config["model"])
    state = torch.load(ckpt, map_location="cpu")
    model.load_state_dict(state)
    # Every value the run used is in the resolved hyperparameters.
    with open(os.path.join(output, "hyperparams.yaml"), encoding="utf-8") as f:
        resolved = f.read()
    assert "rnn_neurons: 16" in resolved and "teacher_name: tea0" in resolved
    train_log = open(os.path.join(output, "train_log.txt")).read()
    assert "epoch: 1" in train_log and "valid PER" in train_log
    assert "test PER" in train_log


def test_second_teacher_differs_as_its_file_says(tiny_teachers):
    save = os.path.dirname(os.path.dirname(tiny_teachers[1]))
    config = json.load(open(os.path.join(save, "model_config.json")))
    assert config["model"]["dec_rnn_type"] == "lstm"  # tea3: LSTM decoder
    assert config["model"]["dropout"] == 0.2
    resolved = open(os.path.join(os.path.dirname(save), "hyperparams.yaml")).read()
    assert re.search(r"^augment: false", resolved, re.M)


@pytest.mark.parametrize("config", TEACHERS)
def test_every_teacher_file_loads_with_its_differences(config, tmp_path):
    base_file, _, values, _ = resolve_base(config)
    assert base_file.endswith(os.path.join("hparams", "teacher.yaml"))
    loaded = load_hparams(
        [config, "--data_folder", str(tmp_path), "--output_folder", str(tmp_path)]
    )
    hparams = loaded.hparams
    for key, value in values.items():
        assert hparams[key] == value
    # The paper-size architecture, e.g. tea6 has one CNN block and 320 neurons.
    assert hparams["model"].config["rnn_neurons"] == values.get("rnn_neurons", 512)


def test_teacher_files_carry_the_original_differences():
    def values(k):
        return resolve_base(TEACHERS[k])[2]

    assert values(1) == {
        "teacher_name": "tea1", "seed": 1001, "batch_size": 16, "dropout": 0.3,
        "augment": False,
    }  # fmt: skip
    assert values(6)["cnn_blocks"] == 1 and values(6)["dnn_neurons"] == 320
    assert values(7)["rnn_neurons"] == 640 and values(7)["augment"] is False
    assert "augment" not in values(0) and "augment" not in values(2)
    # Teacher files stay short: what differs, nothing else.
    for path in TEACHERS:
        assert len(open(path).read().splitlines()) <= 12


def test_command_line_overrides_win_over_teacher_file(tmp_path):
    loaded = load_hparams(
        [TEACHERS[1], "--data_folder", str(tmp_path), "--batch_size", "3"]
    )
    assert loaded.hparams["batch_size"] == 3  # command line
    assert loaded.hparams["dropout"] == 0.3  # teacher file
    assert loaded.hparams["lr"] == 0.0003  # base
    assert loaded.hparams["train_dataloader_opts"]["batch_size"] == 3


def test_misspelt_key_names_the_key_and_a_fix(tmp_path):
    with pytest.raises(HparamsError, match=r"`--batch_szie` \(from the command line\)"):
        load_hparams([TEACHERS[0], "--data_folder", "x", "--batch_szie", "3"])
    child = tmp_path / "teaX.yaml"
    child.write_text(
        f"base: {os.path.join(REPO, 'hparams/teacher.yaml')}\ndropuot: 1\n"
    )
    with pytest.raises(HparamsError, match="Did you mean dropout"):
        load_hparams([str(child), "--data_folder", "x"])
    # a renamed key names its new name
    with pytest.raises(HparamsError, match="renamed: use `--augment`"):
        load_hparams([TEACHERS[0], "--data_folder", "x", "--speed_perturb", "False"])


def test_missing_data_folder_is_a_clear_error(tmp_path):
    proc = run_script(["train_teacher.py", TEACHERS[0]], check=False)
    assert proc.returncode == 2
    assert "`data_folder` has no value" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_script(
        ["train_teacher.py", TEACHERS[0], "--data_folder", str(tmp_path / "nope"),
         "--output_folder", str(tmp_path / "out")], check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_interrupted_training_resumes_from_last_checkpoint(mini_corpus, tmp_path):
    out = tmp_path / "tea9"
    args = [
        sys.executable, "train_teacher.py", TEACHERS[9], "--data_folder", mini_corpus,
        "--output_folder", str(out), "--device", "cpu", "--noprogressbar",
        *TINY_MODEL, "--number_of_epochs", "3", "--batch_size", "4",
        "--test_beam_size", "2",
    ]  # fmt: skip
    first = subprocess.Popen(
        args, cwd=REPO, env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    save = out / "save"
    deadline = time.time() + 300
    # Kill the run (as a pre-empted job would be) once epoch 1's checkpoint exists.
    while time.time() < deadline and first.poll() is None:
        if list(save.glob("CKPT+*/CKPT.yaml")):  # a complete checkpoint
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the first run ended before the kill"
    assert not (out / "per_test.txt").exists()
    epochs_before = open(out / "train_log.txt").read().count("epoch: ")
    assert epochs_before >= 1

    second = run_script(args[1:])
    log = second.stdout + second.stderr
    assert "Loading a checkpoint" in log
    assert "Going into epoch 1\n" not in log
    train_log = open(out / "train_log.txt").read()
    # Each epoch trained once over the two runs, and the test report exists.
    assert [int(e) for e in re.findall(r"^epoch: (\d+)", train_log, re.M)] == [1, 2, 3]
    assert read_per(out / "per_test.txt") > 0


def test_repeated_command_line_option_last_wins(tmp_path):
    loaded = load_hparams(
        [TEACHERS[0], "--data_folder", str(tmp_path), "--lr", "0.1", "--lr", "0.2"]
    )
    assert loaded.hparams["lr"] == 0.2


def test_a_copied_child_file_finds_its_base_or_says_how(tmp_path):
    """Issue 24: train_kd.yaml copied elsewhere to edit still finds
    teacher.yaml (the recipe's hparams/); a base found nowhere is named, with
    the fix."""
    copy = tmp_path / "my_kd.yaml"
    shutil.copy(os.path.join(REPO, "hparams/train_kd.yaml"), copy)
    base_file, _, values, sources = resolve_base(str(copy))
    assert base_file == os.path.join(REPO, "hparams", "teacher.yaml")
    assert sources[0] == str(copy) and values["dropout"] == 0.25
    copy.write_text(copy.read_text().replace("base: teacher.yaml", "base: nope.yaml"))
    with pytest.raises(HparamsError) as err:
        resolve_base(str(copy))
    assert str(tmp_path / "nope.yaml") in str(err.value)
    assert f"base: {os.path.join(REPO, 'hparams')}/teacher.yaml" in str(err.value)
