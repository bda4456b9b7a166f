"""unlabelled_prepare.py: audio without transcripts (issue 23, first part).

TIMIT's SA1/SA2 sentences, a folder of audio, or a manifest; every file
checked like the labelled corpus; no utterance of the labelled manifests;
one error naming every bad file; nothing written then. Issue 33: nothing of
valid or test leaks in, by samples (a renamed copy), by speaker (unless
allowed) or through a link; a file without sound is named.
"""

import json
import logging
import os
import shutil

import numpy
import pytest
import soundfile
from conftest import REPO, run_script

import unlabelled_prepare
from mtkd.data import SPLITS, prepare_unlabelled_manifest
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


# ------------------------------------------------------------------------
# Nothing of valid or test leaks into the pool (issue 33)


def _first(manifest_path, data_folder):
    """(utt_id, audio path, speaker) of a manifest's first utterance."""
    utt_id, entry = sorted(json.load(open(manifest_path)).items())[0]
    return utt_id, entry["wav"].replace("{data_root}", data_folder), entry["spk_id"]


def test_a_renamed_copy_of_a_test_recording_is_refused_by_its_samples(
    mini_corpus, labelled, tmp_path
):
    utt_id, wav, _ = _first(labelled[2], mini_corpus)
    samples, rate = soundfile.read(wav, dtype="int16")
    pool = tmp_path / "pool" / "misc"
    pool.mkdir(parents=True)
    soundfile.write(pool / "clip1.wav", samples, rate, subtype="PCM_16")
    soundfile.write(pool / "clip2.flac", samples, rate)
    soundfile.write(pool / "fine.wav", speech(), 16000)
    out = str(tmp_path / "u.json")
    # Copies are refused even where evaluation speakers are allowed.
    for options in ({}, {"allow_eval_speakers": True}):
        with pytest.raises(TimitPrepError) as err:
            prepare_unlabelled(
                str(tmp_path / "pool"), out, labelled=labelled, **options
            )
        message = str(err.value)
        assert message.startswith("2 unlabelled audio file(s) from")
        for name in ("clip1.wav", "clip2.flac"):
            assert (
                f"{pool / name}: its samples are those of utterance {utt_id} of "
                f"{labelled[2]}" in message
            )
        assert "copies of them under any name, never belong" in message
        assert not os.path.exists(out)


def test_a_valid_speaker_in_the_pool_is_refused_unless_allowed(
    mini_corpus, labelled, tmp_path, caplog
):
    _, wav, speaker = _first(labelled[1], mini_corpus)
    sa1 = os.path.join(os.path.dirname(wav), "SA1.WAV")  # in no manifest
    pool = tmp_path / "pool"
    (pool / "misc").mkdir(parents=True)
    (pool / speaker.lower()).mkdir()
    shutil.copy(sa1, pool / "misc" / "renamed.wav")  # found by its samples
    soundfile.write(pool / speaker.lower() / "new.wav", speech(), 16000)  # folder
    soundfile.write(pool / "misc" / f"{speaker}_SX9.wav", speech(2), 16000)  # name
    soundfile.write(pool / "misc" / "other.wav", speech(3), 16000)
    out = str(tmp_path / "u.json")
    with pytest.raises(TimitPrepError) as err:
        prepare_unlabelled(str(pool), out, labelled=labelled)
    message = str(err.value)
    assert message.startswith("3 unlabelled audio file(s) from")
    assert (
        f"{pool / 'misc' / 'renamed.wav'}: its samples are those of {sa1}, a "
        f"recording of {speaker}, a speaker of {labelled[1]}" in message
    )
    for path in (
        pool / speaker.lower() / "new.wav",
        pool / "misc" / f"{speaker}_SX9.wav",
    ):
        assert f"{path}: its speaker {speaker} is a speaker of {labelled[1]}" in message
    assert "other.wav" not in message
    assert "run again with --allow_eval_speakers_in_pool True" in message
    assert not os.path.exists(out)

    caplog.set_level(logging.WARNING, logger="unlabelled_prepare")
    assert (
        prepare_unlabelled(str(pool), out, labelled=labelled, allow_eval_speakers=True)
        == 4
    )
    assert "3 unlabelled audio file(s) are recordings of valid or test speakers" in (
        caplog.text
    )
    # The command line takes the option as the stages do (True) or bare.
    for flag in (
        ["--allow_eval_speakers_in_pool", "True"],
        ["--allow_eval_speakers_in_pool"],
    ):
        os.remove(out)
        argv = [str(pool), out, "--labelled", *labelled, *flag]
        assert unlabelled_prepare.main(argv) == 0
        assert len(json.load(open(out))) == 4

    # The stages (save_teachers.py, train_kd.py) take it from their hparams.
    hparams = {
        "unlabelled": str(pool), "unlabelled_annotation": str(tmp_path / "s.json"),
        "data_folder": mini_corpus,
        **{f"{s}_annotation": p for s, p in zip(SPLITS, labelled, strict=True)},
    }  # fmt: skip
    with pytest.raises(TimitPrepError, match="run again with --allow_eval_speak"):
        prepare_unlabelled_manifest(hparams)
    prepare_unlabelled_manifest({**hparams, "allow_eval_speakers_in_pool": True})
    assert len(json.load(open(tmp_path / "s.json"))) == 4
    for yaml in ("hparams/save_teachers.yaml", "hparams/train_kd.yaml"):
        assert (
            "allow_eval_speakers_in_pool: False"
            in open(os.path.join(REPO, yaml)).read()
        )


def test_a_link_to_a_valid_file_is_caught_without_data_folder(
    mini_corpus, labelled, tmp_path
):
    utt_id, wav, _ = _first(labelled[1], mini_corpus)
    pool = tmp_path / "pool"
    pool.mkdir()
    os.symlink(wav, pool / "link.wav")
    soundfile.write(pool / "fine.wav", speech(), 16000)
    out = str(tmp_path / "u.json")
    # {data_root} is the corpus that timit_prepare_opts.json beside them records.
    with pytest.raises(TimitPrepError) as err:
        prepare_unlabelled(str(pool), out, labelled=labelled)
    assert f"{pool / 'link.wav'}: it is utterance {utt_id} of {labelled[1]}" in (
        str(err.value)
    )
    # Manifests copied without it: refused, with what to give.
    copied = tmp_path / "copied"
    copied.mkdir()
    for path in labelled:
        shutil.copy(path, copied)
    moved = [str(copied / os.path.basename(p)) for p in labelled]
    proc = run_script(
        ["unlabelled_prepare.py", str(pool), out, "--labelled", *moved], check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"ERROR: {moved[0]}: its wav paths begin with")
    assert "Give --data_folder /path/to/TIMIT" in proc.stderr
    # A --data_folder that is not their corpus: said, not compared in vain.
    with pytest.raises(TimitPrepError) as err:
        prepare_unlabelled(str(pool), out, str(tmp_path / "elsewhere"), moved)
    train = json.load(open(moved[0]))
    assert str(err.value).startswith(
        f"{moved[0]}: {len(train)} of its {len(train)} recordings do not exist"
    )
    # With --data_folder the link is caught again.
    with pytest.raises(TimitPrepError, match=f"it is utterance {utt_id} of"):
        prepare_unlabelled(str(pool), out, mini_corpus, moved)
    assert not os.path.exists(out)


def test_a_pool_file_without_sound_is_named(labelled, tmp_path, caplog):
    pool = tmp_path / "pool"
    pool.mkdir()
    soundfile.write(pool / "fine.wav", speech(), 16000)
    soundfile.write(pool / "zeros.wav", numpy.zeros(16000, numpy.int16), 16000)
    caplog.set_level(logging.WARNING, logger="unlabelled_prepare")
    out = str(tmp_path / "u.json")
    assert prepare_unlabelled(str(pool), out, labelled=labelled) == 2
    assert "1 unlabelled audio file(s) from" in caplog.text
    assert f"{pool / 'zeros.wav'}: every sample is 0" in caplog.text
