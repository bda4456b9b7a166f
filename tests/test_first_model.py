"""tools/first_model.py: corpus, one model, export and a transcription, each
command printed; a second run redoes nothing finished (tiny sizes here)."""

import os
import re

from conftest import run_script


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
                     r"[0-9.]+ % \(greedy CTC\); [0-9.]+ min in all", line)
        for line in lines
    )  # fmt: skip
    assert os.path.isfile(out / "exported" / "hyperparams.yaml")
    again = run_script(argv).stdout
    assert [line for line in again.splitlines() if line.startswith("$ python")] == [
        next(line for line in lines if "transcribe.py" in line and line.startswith("$"))
    ]
