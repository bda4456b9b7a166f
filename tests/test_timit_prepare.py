"""Tests of timit_prepare.py on fake corpora built by fake_timit.py."""

import json
import logging
import os
import shutil

import pytest

import timit_prepare as tp
from timit_prepare import (
    DEV_SPEAKERS,
    OPTS_FILENAME,
    PHONE_MAP_61_39,
    PHONE_SETS,
    TEST_SPEAKERS,
    TIMIT_61_PHONES,
    TimitPrepError,
    fold_phones,
    prepare_timit,
    read_sphere_duration,
)
from tools.fake_timit import (
    FAKE_PHONES,
    FAKE_WORDS,
    make_fake_timit,
    sphere_bytes,
)

UTT_SAMPLES = 160
LAYOUTS = ("ldc", "lower", "riff_copy")
SPLITS = ("train", "valid", "test")

# Lee & Hon (1989) 61 -> 39, written out symbol by symbol (None: dropped).
EXPECTED_61_39 = {
    "aa": "aa", "ae": "ae", "ah": "ah", "ao": "aa", "aw": "aw", "ax": "ah",
    "ax-h": "ah", "axr": "er", "ay": "ay", "b": "b", "bcl": "sil", "ch": "ch",
    "d": "d", "dcl": "sil", "dh": "dh", "dx": "dx", "eh": "eh", "el": "l",
    "em": "m", "en": "n", "eng": "ng", "epi": "sil", "er": "er", "ey": "ey",
    "f": "f", "g": "g", "gcl": "sil", "h#": "sil", "hh": "hh", "hv": "hh",
    "ih": "ih", "ix": "ih", "iy": "iy", "jh": "jh", "k": "k", "kcl": "sil",
    "l": "l", "m": "m", "n": "n", "ng": "ng", "nx": "n", "ow": "ow", "oy": "oy",
    "p": "p", "pau": "sil", "pcl": "sil", "q": None, "r": "r", "s": "s",
    "sh": "sh", "t": "t", "tcl": "sil", "th": "th", "uh": "uh", "uw": "uw",
    "ux": "uw", "v": "v", "w": "w", "y": "y", "z": "z", "zh": "sh",
}  # fmt: skip
EXPECTED_39 = set(
    "aa ae ah aw ay b ch d dh dx eh er ey f g hh ih iy jh k l m n ng ow oy p r "
    "s sh sil t th uh uw v w y z".split()
)


def _paths(out_dir):
    return [os.path.join(out_dir, f"{s}.json") for s in SPLITS]


def _prepare(data_folder, out_dir, **kwargs):
    """Runs prepare_timit into out_dir and returns {split: manifest}."""
    paths = _paths(out_dir)
    prepare_timit(data_folder, *paths, **kwargs)
    return {s: _load(p) for s, p in zip(SPLITS, paths, strict=True)}


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _mini(tmp_path, layout="ldc", name="TIMIT", **kwargs):
    return str(make_fake_timit(tmp_path / name, layout, full=False, **kwargs))


# Mini corpus: 8 train speakers, 4 dev, 4 core test, 2 others; 8 kept utts each.
MINI_COUNTS = {"train": 64, "valid": 32, "test": 32}


@pytest.fixture(scope="session")
def full_corpora(tmp_path_factory):
    """{layout: (data_folder, {split: manifest}, out_dir)}, full size, built once."""
    out = {}
    for layout in LAYOUTS:
        base = tmp_path_factory.mktemp(f"timit_{layout}")
        root = str(make_fake_timit(base / "TIMIT", layout, utt_samples=UTT_SAMPLES))
        out_dir = str(base / "prepared")
        out[layout] = (root, _prepare(root, out_dir), out_dir)
    return out


# ---------------------------------------------------------------------------
# Full-size corpora, every layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_corpus_split(full_corpora, layout):
    _, data, _ = full_corpora[layout]
    assert {s: len(data[s]) for s in SPLITS} == {
        "train": 3696,
        "valid": 400,
        "test": 192,
    }
    spk = {s: {v["spk_id"] for v in data[s].values()} for s in SPLITS}
    assert len(spk["train"]) == 462
    assert {s.lower() for s in spk["valid"]} == DEV_SPEAKERS
    assert {s.lower() for s in spk["test"]} == TEST_SPEAKERS
    assert not spk["train"] & (spk["valid"] | spk["test"])
    for split in SPLITS:
        for utt_id, entry in data[split].items():
            assert set(entry) == {"wav", "duration", "spk_id", "phn", "wrd"}
            assert utt_id == utt_id.upper()
            assert entry["spk_id"] == entry["spk_id"].upper()
            assert utt_id.startswith(entry["spk_id"] + "_")
            assert not utt_id.endswith(("_SA1", "_SA2"))
            assert "SA1" not in entry["wav"].upper().split("/")[-1]
            assert entry["duration"] == pytest.approx(UTT_SAMPLES / 16000)
            assert entry["phn"] == " ".join(fold_phones(list(FAKE_PHONES), 39))
            assert entry["wrd"] == " ".join(FAKE_WORDS)


def test_same_ids_and_contents_across_layouts(full_corpora):
    ref = full_corpora["ldc"][1]
    for layout in ("lower", "riff_copy"):
        data = full_corpora[layout][1]
        for split in SPLITS:
            assert set(data[split]) == set(ref[split])
            for utt_id, entry in data[split].items():
                other = ref[split][utt_id]
                for key in ("duration", "spk_id", "phn", "wrd"):
                    assert entry[key] == other[key]


def test_wav_entries_per_layout(full_corpora):
    for layout in LAYOUTS:
        data = full_corpora[layout][1]
        wavs = [e["wav"] for s in SPLITS for e in data[s].values()]
        assert len(set(wavs)) == len(wavs) == 3696 + 400 + 192
        for wav in wavs:
            assert wav.startswith("{data_root}/")
            if layout == "riff_copy":
                assert wav.endswith(".WAV.wav")
                assert wav.startswith(("{data_root}/TRAIN/DR", "{data_root}/TEST/DR"))
            elif layout == "ldc":
                assert wav.endswith(".WAV") and not wav.lower().endswith(".wav.wav")
                assert wav.startswith(("{data_root}/TRAIN/DR", "{data_root}/TEST/DR"))
            else:
                assert wav.endswith(".wav") and not wav.endswith(".wav.wav")
                assert wav == wav.lower()
    # The real relative path, with its case, e.g. TEST/DR?/FADG0/SX?.WAV.wav.
    valid = full_corpora["riff_copy"][1]["valid"]
    utt_id = sorted(valid)[0]
    spk, utt = utt_id.split("_")
    assert valid[utt_id]["wav"].endswith(f"/{spk}/{utt}.WAV.wav")
    assert valid[utt_id]["wav"].startswith("{data_root}/TEST/DR")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_manifests_load_in_speechbrain(full_corpora, layout):
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.dataio.dataset import DynamicItemDataset

    root, data, out_dir = full_corpora[layout]
    for split, path in zip(SPLITS, _paths(out_dir), strict=True):
        ds = DynamicItemDataset.from_json(path, replacements={"data_root": root})
        assert len(ds) == len(data[split])
        first = sorted(data[split])[0]
        wav = ds.data[first]["wav"]
        assert wav.startswith(root)
        assert os.path.isfile(wav)
        audio = read_audio(wav)
        assert audio.shape == (UTT_SAMPLES,)
        assert float(audio.abs().max()) > 0


# ---------------------------------------------------------------------------
# Split decisions and layouts on small corpora


@pytest.mark.parametrize(
    "parent", ["train_test/TIMIT_parent", "x/TEST/y", "TRAIN/TEST", "test/train"]
)
def test_split_ignores_path_above_data_folder(tmp_path, parent):
    base = tmp_path / parent
    base.mkdir(parents=True)
    root = _mini(base)
    data = _prepare(root, str(tmp_path / "out"))
    assert {s: len(data[s]) for s in SPLITS} == MINI_COUNTS
    assert {v["spk_id"].lower() for v in data["valid"].values()} <= DEV_SPEAKERS
    assert {v["spk_id"].lower() for v in data["test"].values()} <= TEST_SPEAKERS
    assert not {v["spk_id"].lower() for v in data["train"].values()} & (
        DEV_SPEAKERS | TEST_SPEAKERS
    )


def test_mixed_case_names(tmp_path):
    ref = _prepare(_mini(tmp_path, name="ref"), str(tmp_path / "out_ref"))
    root = _mini(tmp_path, name="mixed")
    os.rename(os.path.join(root, "TEST"), os.path.join(root, "Test"))
    dr = os.path.join(root, "TRAIN", "DR1")
    spk = sorted(os.listdir(dr))[0]
    os.rename(os.path.join(dr, spk), os.path.join(dr, spk.lower()))
    spk_dir = os.path.join(dr, spk.lower())
    for name in os.listdir(spk_dir):
        if name.endswith((".PHN", ".WRD")) or name.startswith("SX"):
            os.rename(os.path.join(spk_dir, name), os.path.join(spk_dir, name.lower()))
    data = _prepare(root, str(tmp_path / "out"))
    for split in SPLITS:
        assert set(data[split]) == set(ref[split])
        for utt_id, entry in data[split].items():
            assert entry["phn"] == ref[split][utt_id]["phn"]
    sx = [e["wav"] for e in data["train"].values() if e["spk_id"] == spk]
    assert sx and all(
        w.startswith(f"{{data_root}}/TRAIN/DR1/{spk.lower()}/") for w in sx
    )
    names = [w.split("/")[-1] for w in sx]
    assert {n for n in names if n.startswith("sx")} == {
        n for n in names if n.endswith(".wav")
    }
    assert len([n for n in names if n.startswith("sx")]) == 5
    assert all(e["wav"].startswith("{data_root}/Test/") for e in data["valid"].values())


def test_layout_detection_and_forcing(tmp_path, caplog):
    riff = _mini(tmp_path, "riff_copy", name="riff")
    caplog.set_level(logging.INFO, logger="timit_prepare")
    data = _prepare(riff, str(tmp_path / "a"))
    assert "layout detected: riff_copy" in caplog.text
    assert all(e["wav"].endswith(".WAV.wav") for e in data["train"].values())
    # Forcing the SPHERE files of the riff copy: same utterances, once each.
    forced = _prepare(riff, str(tmp_path / "b"), layout="ldc")
    for split in SPLITS:
        assert set(forced[split]) == set(data[split])
        assert all(e["wav"].endswith(".WAV") for e in forced[split].values())
    lower = _mini(tmp_path, "lower", name="timit")
    caplog.clear()
    data = _prepare(lower, str(tmp_path / "c"))
    assert "layout detected: lower" in caplog.text
    assert {s: len(data[s]) for s in SPLITS} == MINI_COUNTS
    # Forcing riff_copy where there are no RIFF files is an error naming a file.
    ldc = _mini(tmp_path, "ldc", name="ldc")
    with pytest.raises(TimitPrepError, match="RIFF") as err:
        _prepare(ldc, str(tmp_path / "d"), layout="riff_copy")
    assert ldc in str(err.value)
    with pytest.raises(TimitPrepError, match="layout"):
        _prepare(ldc, str(tmp_path / "e"), layout="kaggle")


def test_partial_speakers_are_reported(tmp_path, caplog):
    root = _mini(tmp_path)
    caplog.set_level(logging.INFO, logger="timit_prepare")
    data = _prepare(root, str(tmp_path / "out"))
    assert {s: len(data[s]) for s in SPLITS} == MINI_COUNTS
    msgs = {r.getMessage(): r.levelno for r in caplog.records}
    assert msgs["valid: 4 of the 50 standard dev speakers found (32 utterances)"] == (
        logging.WARNING
    )
    assert msgs["test: 4 of the 24 core test speakers found (32 utterances)"] == (
        logging.WARNING
    )
    assert msgs["train: 64 utterances from 8 speakers"] == logging.INFO


# ---------------------------------------------------------------------------
# Phone sets


def test_61_to_39_table():
    assert len(TIMIT_61_PHONES) == len(set(TIMIT_61_PHONES)) == 61
    assert set(EXPECTED_61_39) == set(TIMIT_61_PHONES)
    for p in TIMIT_61_PHONES:
        assert PHONE_MAP_61_39[p] == EXPECTED_61_39[p], p
        expected = [] if EXPECTED_61_39[p] is None else [EXPECTED_61_39[p]]
        assert fold_phones([p], 39) == expected
    assert set(PHONE_SETS[39]) == EXPECTED_39
    assert len(PHONE_SETS[39]) == 39
    assert {v for v in PHONE_MAP_61_39.values() if v} == EXPECTED_39


def test_other_phone_sets():
    assert len(PHONE_SETS[48]) == 48
    assert set(fold_phones(list(TIMIT_61_PHONES), 48)) == set(PHONE_SETS[48])
    assert {"vcl", "cl", "sil", "epi", "ao", "ax", "el", "en", "ix", "zh"} <= set(
        PHONE_SETS[48]
    )
    assert not {"ax-h", "axr", "bcl", "pcl", "h#", "pau", "q", "hv"} & set(
        PHONE_SETS[48]
    )
    assert set(PHONE_SETS[60]) == set(TIMIT_61_PHONES) - {"q"}
    assert fold_phones(list(TIMIT_61_PHONES), 60) == [
        p for p in TIMIT_61_PHONES if p != "q"
    ]
    assert PHONE_SETS[61] == TIMIT_61_PHONES
    assert fold_phones(list(TIMIT_61_PHONES), 61) == list(TIMIT_61_PHONES)
    # Repeats produced by folding are kept.
    assert fold_phones(["pcl", "h#", "q", "bcl", "b"], 39) == ["sil", "sil", "sil", "b"]
    with pytest.raises(TimitPrepError, match="'xx'"):
        fold_phones(["aa", "xx"], 39)
    with pytest.raises(TimitPrepError, match="phn_set"):
        fold_phones(["aa"], 40)


HAND_PHN = """0 2400 h#
2400 3000 q
3000 4000 ix
4000 4500 bcl
4500 5000 b
5000 6200 axr
6200 7000 pau
7000 7300 ax-h
7300 8000 zh
8000 9000 h#
"""


@pytest.mark.parametrize(
    "phn_set, expected",
    [
        (61, "h# q ix bcl b axr pau ax-h zh h#"),
        (60, "h# ix bcl b axr pau ax-h zh h#"),
        (48, "sil ix vcl b er sil ax zh sil"),
        (39, "sil ih sil b er sil ah sh sil"),
    ],
)
def test_hand_written_phn(tmp_path, phn_set, expected):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root)
    utt = utts[2]
    with open(os.path.join(spk_dir, utt + ".PHN"), "w") as f:
        f.write(HAND_PHN)
    data = _prepare(root, str(tmp_path / "out"), phn_set=phn_set)
    spk = os.path.basename(spk_dir)
    assert data["train"][f"{spk}_{utt}"]["phn"] == expected
    assert data["train"][f"{spk}_{utt}"]["wrd"] == " ".join(FAKE_WORDS)
    others = [e["phn"] for k, e in data["train"].items() if k != f"{spk}_{utt}"]
    assert set(others) == {" ".join(fold_phones(list(FAKE_PHONES), phn_set))}
    assert set(" ".join(others).split()) == set(PHONE_SETS[phn_set])


def _speaker(root, split="TRAIN", spk=None):
    """(speaker folder, its sorted non-SA utterance stems) in a fake corpus."""
    top = os.path.join(root, split)
    for dr in sorted(os.listdir(top)):
        for name in sorted(os.listdir(os.path.join(top, dr))):
            if spk is None or name == spk:
                folder = os.path.join(top, dr, name)
                stems = sorted(
                    n[:-4]
                    for n in os.listdir(folder)
                    if n.endswith(".PHN") and not n.startswith("SA")
                )
                return folder, stems
    raise AssertionError(f"no speaker {spk} in {top}")


# ---------------------------------------------------------------------------
# Durations from headers


def test_sphere_without_sample_count(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(sphere_bytes(321, sample_count=False))
    assert read_sphere_duration(str(path)) == pytest.approx(321 / 16000)
    path.write_bytes(sphere_bytes(321))
    assert read_sphere_duration(str(path)) == pytest.approx(321 / 16000)
    # In a corpus too.
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root)
    utt = utts[3]
    with open(os.path.join(spk_dir, utt + ".WAV"), "wb") as f:
        f.write(sphere_bytes(4000, sample_count=False))
    data = _prepare(root, str(tmp_path / "out"))
    key = f"{os.path.basename(spk_dir)}_{utt}"
    assert data["train"][key]["duration"] == pytest.approx(0.25)
    path.write_bytes(b"RIFF....WAVE")
    with pytest.raises(TimitPrepError, match="SPHERE") as err:
        read_sphere_duration(str(path))
    assert str(path) in str(err.value)


def test_riff_durations_from_header(tmp_path):
    root = _mini(tmp_path, "riff_copy", utt_samples=800)
    data = _prepare(root, str(tmp_path / "out"))
    assert {e["duration"] for s in SPLITS for e in data[s].values()} == {0.05}


# ---------------------------------------------------------------------------
# Skipping and re-preparing


def test_skip_and_reprepare(tmp_path, caplog):
    root = _mini(tmp_path)
    out = str(tmp_path / "out")
    paths = _paths(out)
    opts_path = os.path.join(out, OPTS_FILENAME)
    first = _prepare(root, out)
    assert os.path.isfile(opts_path)
    assert _load(opts_path)["phn_set"] == 39
    stamps = [os.stat(p).st_mtime_ns for p in [*paths, opts_path]]

    caplog.set_level(logging.INFO, logger="timit_prepare")
    assert _prepare(root, out) == first
    assert "already prepared" in caplog.text
    assert [os.stat(p).st_mtime_ns for p in [*paths, opts_path]] == stamps

    caplog.clear()
    second = _prepare(root, out, phn_set=61)
    assert "already prepared" not in caplog.text
    assert _load(opts_path)["phn_set"] == 61
    assert set(second["train"]) == set(first["train"])
    some = sorted(first["train"])[0]
    assert second["train"][some]["phn"] != first["train"][some]["phn"]
    assert second["train"][some]["phn"].split()[0] == "h#"

    # Another layout option, another data folder: prepared again.
    caplog.clear()
    _prepare(root, out, phn_set=61, layout="ldc")
    assert "already prepared" not in caplog.text
    assert _load(opts_path)["layout"] == "ldc"
    other = _mini(tmp_path, "lower", name="timit_lower")
    caplog.clear()
    third = _prepare(other, out, phn_set=61, layout="ldc")
    assert "already prepared" not in caplog.text
    assert set(third["train"]) == set(second["train"])
    assert all(
        e["wav"].startswith("{data_root}/train/") for e in third["train"].values()
    )
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_manifest_missing_reprepares(tmp_path, caplog):
    root = _mini(tmp_path)
    out = str(tmp_path / "out")
    _prepare(root, out)
    os.remove(os.path.join(out, "valid.json"))
    caplog.set_level(logging.INFO, logger="timit_prepare")
    data = _prepare(root, out)
    assert "already prepared" not in caplog.text
    assert len(data["valid"]) == 32


def test_interrupted_write_is_not_complete(tmp_path, monkeypatch, caplog):
    root = _mini(tmp_path)
    out = str(tmp_path / "out")
    _prepare(root, out)
    real = tp._write_json_atomic

    def failing(path, obj):
        if path.endswith("valid.json"):
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(tp, "_write_json_atomic", failing)
    with pytest.raises(OSError):
        _prepare(root, out, phn_set=48)
    assert not os.path.exists(os.path.join(out, OPTS_FILENAME))
    monkeypatch.setattr(tp, "_write_json_atomic", real)
    caplog.set_level(logging.INFO, logger="timit_prepare")
    data = _prepare(root, out, phn_set=39)
    assert "already prepared" not in caplog.text
    assert "vcl" not in data["train"][sorted(data["train"])[0]]["phn"]


def test_skip_prep_does_nothing(tmp_path):
    out = tmp_path / "out"
    prepare_timit(str(tmp_path / "nowhere"), *_paths(str(out)), skip_prep=True)
    assert not out.exists()


def test_cli(tmp_path, capsys):
    root = _mini(tmp_path)
    out = str(tmp_path / "out")
    assert tp.main([root, out, "--phn_set", "48"]) == 0
    assert len(_load(os.path.join(out, "valid.json"))) == 32
    assert tp.main([str(tmp_path / "nowhere"), out]) == 1
    assert "nowhere" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Errors


def test_error_missing_data_folder(tmp_path):
    missing = str(tmp_path / "no_such_timit")
    with pytest.raises(TimitPrepError, match="does not exist") as err:
        _prepare(missing, str(tmp_path / "out"))
    assert missing in str(err.value)


def test_error_points_at_parent(tmp_path):
    parent = tmp_path / "corpora"
    parent.mkdir()
    corpus = _mini(parent, name="TIMIT")
    (parent / "other").mkdir()
    with pytest.raises(TimitPrepError) as err:
        _prepare(str(parent), str(tmp_path / "out"))
    msg = str(err.value)
    assert str(parent) in msg
    assert "TRAIN" in msg and "TEST" in msg
    assert "other" in msg  # lists what is there
    assert f"data_folder={corpus!r}" in msg


def test_error_suggests_data_subfolder_two_levels_down(tmp_path):
    corpus = _mini(tmp_path / "archive", name="data")
    with pytest.raises(TimitPrepError) as err:
        _prepare(str(tmp_path), str(tmp_path / "out"))
    assert corpus in str(err.value)


def test_error_points_into_corpus(tmp_path):
    root = _mini(tmp_path)
    train = os.path.join(root, "TRAIN")
    with pytest.raises(TimitPrepError) as err:
        _prepare(train, str(tmp_path / "out"))
    assert train in str(err.value)
    assert f"data_folder={root!r}" in str(err.value)


def test_error_missing_test_folder(tmp_path):
    root = _mini(tmp_path)
    shutil.rmtree(os.path.join(root, "TEST"))
    with pytest.raises(TimitPrepError, match="no TEST folder") as err:
        _prepare(root, str(tmp_path / "out"))
    assert root in str(err.value)
    assert "TRAIN" in str(err.value)


def test_error_unparsable_phn_line(tmp_path):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root)
    phn = os.path.join(spk_dir, utts[4] + ".PHN")
    with open(phn, "w") as f:
        f.write("0 100 h#\n100 two hundred aa\n")
    with pytest.raises(TimitPrepError) as err:
        _prepare(root, str(tmp_path / "out"))
    assert phn in str(err.value)
    assert "line 2" in str(err.value)


def test_error_unknown_phone(tmp_path):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root, "TEST", "FDHC0")
    phn = os.path.join(spk_dir, utts[5] + ".PHN")
    with open(phn, "w") as f:
        f.write("0 100 h#\n100 200 aa\n200 300 xyz\n300 400 h#\n")
    with pytest.raises(TimitPrepError) as err:
        _prepare(root, str(tmp_path / "out"))
    msg = str(err.value)
    assert phn in msg and "line 3" in msg and "'xyz'" in msg


def test_error_wav_without_phn(tmp_path):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root, "TEST", "FAKS0")
    stem = os.path.join(spk_dir, utts[6])
    os.remove(stem + ".PHN")
    with pytest.raises(TimitPrepError, match="no .PHN") as err:
        _prepare(root, str(tmp_path / "out"))
    assert stem + ".WAV" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, split",
    [({"n_dev": 0}, "valid"), ({"n_test": 0}, "test"), ({"n_train": 0}, "train")],
)
def test_error_empty_split(tmp_path, kwargs, split):
    root = _mini(tmp_path, **kwargs)
    out = str(tmp_path / "out")
    with pytest.raises(TimitPrepError, match=f"{split} split is empty") as err:
        _prepare(root, out)
    assert root in str(err.value)
    assert not os.path.exists(os.path.join(out, OPTS_FILENAME))


def test_error_bad_phn_set(tmp_path):
    with pytest.raises(TimitPrepError, match="phn_set"):
        _prepare(_mini(tmp_path), str(tmp_path / "out"), phn_set=42)


# ---------------------------------------------------------------------------
# Nothing dropped without a word (issue 33)


def test_a_linked_speaker_folder_is_followed(tmp_path):
    root = _mini(tmp_path)
    expected = _prepare(root, str(tmp_path / "before"))
    spk_dir, utts = _speaker(root)
    elsewhere = tmp_path / "other_disk" / os.path.basename(spk_dir)
    shutil.move(spk_dir, elsewhere)
    os.symlink(elsewhere, spk_dir)
    data = _prepare(root, str(tmp_path / "out"))
    assert data == expected
    assert f"{os.path.basename(spk_dir)}_{utts[0]}" in data["train"]


def test_error_phn_without_wav(tmp_path):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root, "TEST", "FAKS0")
    stem = os.path.join(spk_dir, utts[2])
    os.remove(stem + ".WAV")
    out = str(tmp_path / "out")
    with pytest.raises(TimitPrepError) as err:
        _prepare(root, out)
    message = str(err.value)
    assert "2 transcription file(s) under" in message  # .PHN and .WRD
    assert f"{stem}.PHN: no {utts[2]}.WAV beside it" in message
    assert f"{stem}.WRD: no {utts[2]}.WAV beside it" in message
    assert "Restore the audio files from the original corpus" in message
    assert not os.path.exists(os.path.join(out, OPTS_FILENAME))


def test_error_audio_outside_a_speaker_folder(tmp_path):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root)
    stray = os.path.join(os.path.dirname(spk_dir), utts[0] + ".WAV")
    shutil.copy(os.path.join(spk_dir, utts[0] + ".WAV"), stray)
    with pytest.raises(TimitPrepError) as err:
        _prepare(root, str(tmp_path / "out"))
    assert f"{stray}: not in a speaker folder" in str(err.value)
    assert "outside a speaker folder (<split>/<DR>/<SPEAKER>/)" in str(err.value)


def test_what_is_left_out_is_counted_in_one_line(tmp_path, caplog):
    root = _mini(tmp_path)
    spk_dir, _ = _speaker(root)
    with open(os.path.join(spk_dir, "NOTES.DOC"), "w") as f:
        f.write("not part of TIMIT")
    os.mkdir(os.path.join(spk_dir, "old"))
    caplog.set_level(logging.INFO, logger="timit_prepare")
    _prepare(root, str(tmp_path / "out"))
    (line,) = [r.message for r in caplog.records if r.message.startswith("Left out")]
    rel = os.path.relpath(spk_dir, root)
    # Mini corpus: SA1 and SA2 of the 16 speakers used; 2 other TEST speakers
    # of 8 utterances; a .TXT beside each of the 128 utterances used.
    assert line == (
        "Left out as the standard split says: 32 SA1/SA2 utterances, 16 "
        "utterances of 2 TEST speakers outside the dev and core test sets; not "
        f"read: 128 .txt, 1 .doc (e.g. {rel}/NOTES.DOC), 1 folder (e.g. {rel}/old)"
    )


def test_a_recording_without_sound_is_named(tmp_path, caplog):
    root = _mini(tmp_path)
    spk_dir, utts = _speaker(root)
    wav = os.path.join(spk_dir, utts[1] + ".WAV")
    with open(wav, "r+b") as f:  # the samples after the 1024-byte header
        f.seek(1024)
        f.write(bytes(2 * UTT_SAMPLES))
    caplog.set_level(logging.INFO, logger="timit_prepare")
    data = _prepare(root, str(tmp_path / "out"))
    assert len(data["train"]) == MINI_COUNTS["train"]  # a warning, not an error
    (warning,) = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "no sound" in r.message
    ]
    assert warning.message.startswith(f"1 recording(s) under {root} hold no sound")
    assert f"{wav}: every sample is 0" in warning.message
