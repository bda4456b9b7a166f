"""unlabelled_prepare.py: audio without transcripts (issue 23, first part).

TIMIT's SA1/SA2 sentences, a folder of audio, or a manifest; every file
checked like the labelled corpus; no utterance of the labelled manifests;
one error naming every bad file; nothing written then.
"""

import json
import os
import shutil

import numpy
import pytest
import soundfile
from conftest import run_script

from timit_prepare import TimitPrepError, prepare_timit
from unlabelled_prepare import TIMIT_SA, prepare_unlabelled


@pytest.fixture(scope="module")
def labelled(mini_corpus, tmp_path_factory):
    """The labelled manifests of the mini corpus: [train, valid, test]."""
    out = tmp_path_factory.mktemp("labelled")
    paths = [str(out / f"{split}.json") for split in ("train", "valid", "test")]
    prepare_timit(mini_corpus, *paths)
    return paths


def speech(seconds=1.0, rate=16000):
    t = numpy.arange(int(seconds * rate)) / rate
    return (0.1 * numpy.sin(2 * numpy.pi * 220 * t)).astype(numpy.float32)


def test_timit_sa_sentences_become_the_unlabelled_manifest(
    mini_corpus, labelled, tmp_path
):
    out = str(tmp_path / "unlabelled.json")
    count = prepare_unlabelled(TIMIT_SA, out, mini_corpus, labelled)
    entries = json.load(open(out))
    train = json.load(open(labelled[0]))
    speakers = {entry["spk_id"] for entry in train.values()}
    assert count == len(entries) == 2 * len(speakers)  # SA1 and SA2 each
    assert {u.rsplit("_", 1)[1] for u in entries} == {"SA1", "SA2"}
    for utt_id, entry in entries.items():
        assert "phn" not in entry and entry["duration"] > 0.5
        assert os.path.isfile(entry["wav"]) and utt_id not in train
    # The same command again: skipped, same file.
    before = os.path.getmtime(out)
    assert prepare_unlabelled(TIMIT_SA, out, mini_corpus, labelled) == count
    assert os.path.getmtime(out) == before


def test_a_folder_of_audio_is_checked_file_by_file(labelled, tmp_path):
    pool = tmp_path / "pool" / "spk1"
    pool.mkdir(parents=True)
    soundfile.write(pool / "good.wav", speech(), 16000)
    soundfile.write(pool / "good2.flac", speech(2.0), 16000)
    out = str(tmp_path / "unlabelled.json")
    assert prepare_unlabelled(str(tmp_path / "pool"), out, labelled=labelled) == 2
    entries = json.load(open(out))
    assert sorted(entries) == ["spk1_good", "spk1_good2"]
    assert entries["spk1_good2"]["duration"] == pytest.approx(2.0)
    assert entries["spk1_good"]["spk_id"] == "spk1"

    bad = {
        "rate": (speech()[::2], 8000, "8000 Hz"),
        "stereo": (numpy.stack([speech(), speech()], 1), 16000, "2 channels"),
        "short": (speech(0.1), 16000, "shorter than"),
        "nan": (numpy.full(16000, numpy.nan, numpy.float32), 16000, "NaN"),
    }
    for name, (samples, rate, _) in bad.items():
        soundfile.write(pool / f"{name}.wav", samples, rate, subtype="FLOAT")
    (pool / "broken.wav").write_bytes(b"RIFF not audio at all")
    os.remove(out)
    with pytest.raises(TimitPrepError) as err:
        prepare_unlabelled(str(tmp_path / "pool"), out, labelled=labelled)
    message = str(err.value)
    assert "5 unlabelled audio file(s)" in message
    for name, (_, _, words) in bad.items():
        assert f"{name}.wav" in message and words in message
    assert "broken.wav" in message
    assert not os.path.exists(out)  # nothing written


def test_labelled_utterances_are_refused_by_path_and_by_id(
    mini_corpus, labelled, tmp_path
):
    train = json.load(open(labelled[0]))
    test = json.load(open(labelled[2]))
    first_train, first_test = sorted(train)[0], sorted(test)[0]
    copy = tmp_path / "copy.wav"
    wav = train[first_train]["wav"].replace("{data_root}", mini_corpus)
    shutil.copy(wav, copy)
    manifest = {
        "same_file": {"wav": test[first_test]["wav"], "duration": 1.0},
        first_train: {"wav": str(copy), "duration": 1.0},
    }
    source = tmp_path / "source.json"
    source.write_text(json.dumps(manifest))
    with pytest.raises(TimitPrepError) as err:
        prepare_unlabelled(str(source), str(tmp_path / "u.json"), mini_corpus, labelled)
    message = str(err.value)
    assert f"it is utterance {first_test} of {labelled[2]}" in message
    assert f"its utterance ID {first_train} is in {labelled[0]}" in message


def test_the_command_line_says_what_is_wrong(tmp_path):
    proc = run_script(
        ["unlabelled_prepare.py", str(tmp_path / "nothing"), str(tmp_path / "u.json")],
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is neither timit_sa, a folder of audio files nor a .json manifest" in (
        proc.stderr
    )
