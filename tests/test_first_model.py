"""tools/first_model.py: corpus, one model, export and a transcription, each
command printed; a second run redoes nothing finished (tiny sizes here); a
larger --epochs trains the folder's model on, a smaller one is refused."""

import json
import os
import re

import pytest
from conftest import run_script

from tools import first_model


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_first_model_trains_exports_and_transcribes(mini_corpus, tmp_path):
    out = tmp_path / "first"
    argv = ["tools/first_model.py", "--data_folder", mini_corpus,
            "--output_folder", str(out), "--epochs", "1"]  # fmt: skip
    proc = run_script(argv)
    lines = proc.stdout.splitlines()
    commands = [line.split()[2] for line in lines if line.startswith("$ python")]
    assert commands == ["train_teacher.py", "export_model.py", "transcribe.py"]
    transcription = next(line for line in lines if ".WAV\t" in line)
    reference = next(line for line in lines if line.startswith("reference ("))
    assert transcription.split("\t")[1].split()  # some phones
    assert "<bos>" not in transcription and len(reference.split(": ")[1].split()) > 3
    assert any(
        re.fullmatch(r"test PER [0-9.]+ % \(attention beam search\), test CTC PER "
                     r"[0-9.]+ % \(greedy CTC\); [0-9]+ epochs trained(, the best "
                     r"on valid: epoch [0-9]+)?; [0-9.]+ min in all", line)
        for line in lines
    )  # fmt: skip
    assert os.path.isfile(out / "exported" / "hyperparams.yaml")
    again = run_script(argv).stdout
    assert [line for line in again.splitlines() if line.startswith("$ python")] == [
        next(line for line in lines if "transcribe.py" in line and line.startswith("$"))
    ]


def finished_run(model_run, epochs, per_test_time=None):
    """What first_model.py reads of a train_teacher.py run finished at
    ``epochs``: an end-of-epoch checkpoint's CKPT.yaml per epoch (as
    SpeechBrain writes it), per_test.txt, train_log.txt (its last epoch the
    best on valid) and test.json."""
    for epoch in range(1, epochs + 1):
        checkpoint = model_run / "save" / f"CKPT+2025-01-31+10-0{epoch}-00+00"
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / "CKPT.yaml").write_text(
            f"# yamllint disable\nPER: 40.0\nend-of-epoch: true\nepoch: {epoch}\n"
            "selection: 40.0\nunixtime: 1738317600.0\n"
        )
    per_test = model_run / "per_test.txt"
    per_test.write_text(f"PER: {50 - epochs}.00  CTC_PER: 60.00\n")
    (model_run / "train_log.txt").write_text(
        "".join(
            f"epoch: {n}, lr: 2.00e-03 - train loss: 4.1\n"
            for n in range(1, epochs + 1)
        )
        + f"Epoch loaded: {epochs}, time_s: 9.0 - test PER: {50 - epochs}.00\n"
    )
    if per_test_time is not None:
        os.utime(per_test, (per_test_time, per_test_time))
    entry = {"wav": "{data_root}/TEST/DR1/FAKS0/SI1.WAV", "phn": "sil aa sil"}
    (model_run / "test.json").write_text(json.dumps({"FAKS0_SI1": entry}))


def test_fewer_epochs_than_the_folder_holds_are_refused(mini_corpus, tmp_path):
    out = tmp_path / "first"
    finished_run(out / "model", 3)
    proc = run_script(
        ["tools/first_model.py", "--data_folder", mini_corpus,
         "--output_folder", str(out), "--epochs", "2"],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"ERROR: {out / 'model'} holds a model already trained for 3 epochs, "
        "more than --epochs 2, and training cannot be undone. Run with --epochs "
        "3 (or more, to train it on) to use it, or give another --output_folder "
        "(or delete this one) for a 2-epoch model.\n"
    )
    assert "$ python" not in proc.stdout  # nothing was run


def test_more_epochs_than_the_folder_holds_train_it_on(tmp_path, monkeypatch, capsys):
    """The commands first_model.py runs on a folder finished at 1 epoch when
    asked for 2 (the scripts themselves: the slow test below)."""
    data, out = tmp_path / "TIMIT", tmp_path / "first"
    data.mkdir()
    (data / "MINI_TIMIT.json").write_text("{}")  # the corpus is there
    finished_run(out / "model", 1, per_test_time=1000)
    exported = out / "exported" / "hyperparams.yaml"
    exported.parent.mkdir(parents=True)
    exported.write_text("the 1-epoch model")
    os.utime(exported, (2000, 2000))  # exported after its test

    commands = []

    def run(argv, say):  # each script's effect on the folder
        say(f"$ python {' '.join(argv)}")
        commands.append(argv[0])
        if argv[0] == "train_teacher.py":
            epochs = int(argv[argv.index("--number_of_epochs") + 1])
            finished_run(out / "model", epochs)
        elif argv[0] == "export_model.py":
            epochs = first_model.trained_epochs(out / "model")
            exported.write_text(f"the {epochs}-epoch model")

    monkeypatch.setattr(first_model, "run", run)
    argv = ["--data_folder", str(data), "--output_folder", str(out), "--epochs"]
    assert first_model.main([*argv, "1"]) == 0  # finished: nothing redone
    assert commands == ["transcribe.py"]
    capsys.readouterr()

    commands.clear()
    assert first_model.main([*argv, "2"]) == 0
    assert commands == ["train_teacher.py", "export_model.py", "transcribe.py"]
    printed = capsys.readouterr().out
    assert (
        f"{out / 'model'} has finished 1 of 2 epochs: training goes on from its "
        "last checkpoint.\n$ python train_teacher.py" in printed
    )
    assert (
        "test PER 48.00 % (attention beam search), test CTC PER 60.00 % (greedy "
        "CTC); 2 epochs trained, the best on valid: epoch 2; " in printed
    )
    assert exported.read_text() == "the 2-epoch model"


@pytest.mark.slow  # two tiny trainings; the logic alone: the two tests above
def test_more_epochs_train_the_model_on_and_fewer_are_refused(mini_corpus, tmp_path):
    out = tmp_path / "first"
    argv = ["tools/first_model.py", "--data_folder", mini_corpus,
            "--output_folder", str(out), "--epochs"]  # fmt: skip
    run_script([*argv, "1"])
    exported = out / "exported" / "hyperparams.yaml"
    before = os.path.getmtime(exported)

    lines = run_script([*argv, "2"]).stdout.splitlines()
    commands = [line.split()[2] for line in lines if line.startswith("$ python")]
    assert commands == ["train_teacher.py", "export_model.py", "transcribe.py"]
    assert (
        f"{out / 'model'} has finished 1 of 2 epochs: training goes on from its "
        "last checkpoint."
    ) in lines
    train = next(line for line in lines if "train_teacher.py" in line)
    assert "--number_of_epochs 2" in train
    log = (out / "model" / "train_log.txt").read_text()
    assert "epoch: 1," in log and "epoch: 2," in log  # epoch 1 not trained again
    assert log.count("epoch: 1,") == 1
    assert os.path.getmtime(exported) > before  # exported again
    assert "; 2 epochs trained, the best on valid: epoch " in next(
        line for line in lines if line.startswith("test PER")
    )

    refused = run_script([*argv, "1"], check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(
        f"ERROR: {out / 'model'} holds a model already trained for 2 epochs, "
        "more than --epochs 1, and training cannot be undone. Run with --epochs 2"
    )
    assert "$ python" not in refused.stdout  # nothing run
