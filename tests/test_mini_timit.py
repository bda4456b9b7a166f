"""Tests of the mini TIMIT corpus (tools/mini_timit/, tools/make_mini_timit.py).

Most tests read the session's tiny corpus (``mini_corpus`` in conftest.py: seed
7, preset "tiny"); a few make small corpora of their own.
"""

import hashlib
import json
import os
import re

import numpy as np
import pytest
import soundfile
from conftest import run_script

from tools.mini_timit import (
    CORE_TEST_SPEAKERS,
    DEV_SPEAKERS,
    DIALECT_ACCENTS,
    MARKER_FILENAME,
    SA_SENTENCES,
    TIMIT_61_PHONES,
    MiniTimitError,
    UnmappedPhonemeError,
    align,
    make_mini_timit,
    phones_for_mnemonic,
    read_sphere,
    sentence_words,
    synthesize,
    write_sphere,
)

STOPS = {"b": "bcl", "d": "dcl", "g": "gcl", "p": "pcl", "t": "tcl", "k": "kcl"}
EXTENSIONS = (".WAV", ".PHN", ".WRD", ".TXT")


def speaker_dirs(root):
    """[(folder, dr, speaker, path)] of every speaker folder, sorted."""
    out = []
    for folder in ("TRAIN", "TEST"):
        for dr in sorted(os.listdir(os.path.join(root, folder))):
            for spk in sorted(os.listdir(os.path.join(root, folder, dr))):
                out.append((folder, dr, spk, os.path.join(root, folder, dr, spk)))
    return out


def utterances(root):
    """[(speaker, stem, path without extension)] of every utterance."""
    out = []
    for _, _, spk, path in speaker_dirs(root):
        stems = sorted({os.path.splitext(f)[0] for f in os.listdir(path)})
        out += [(spk, stem, os.path.join(path, stem)) for stem in stems]
    return out


def read_segments(path):
    rows = []
    with open(path, encoding="ascii") as f:
        for line in f:
            start, end, label = line.split()
            rows.append((int(start), int(end), label))
    return rows


def tree_hashes(root):
    """{relative path: md5} of every corpus file but the marker."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel != MARKER_FILENAME:
                with open(path, "rb") as f:
                    out[rel] = hashlib.md5(f.read()).hexdigest()
    return out


# ---------------------------------------------------------------------------
# Layout and files


def test_layout(mini_corpus):
    assert sorted(os.listdir(mini_corpus)) == sorted(["TEST", "TRAIN", MARKER_FILENAME])
    dirs = speaker_dirs(mini_corpus)
    assert sum(1 for d in dirs if d[0] == "TRAIN") == 6
    assert sum(1 for d in dirs if d[0] == "TEST") == 4
    for _, dr, spk, path in dirs:
        assert re.fullmatch(r"DR[1-8]", dr)
        assert re.fullmatch(r"[FM][A-Z]{3}[0-9]", spk)
        files = sorted(os.listdir(path))
        stems = sorted({os.path.splitext(f)[0] for f in files})
        assert len(stems) == 10
        assert stems[:2] == ["SA1", "SA2"]
        assert sum(bool(re.fullmatch(r"SI[0-9]+", s)) for s in stems) == 3
        assert sum(bool(re.fullmatch(r"SX[0-9]+", s)) for s in stems) == 5
        assert files == sorted(s + e for s in stems for e in EXTENSIONS)
    # no temporary build folder left beside the corpus
    parent = os.path.dirname(mini_corpus)
    assert [n for n in os.listdir(parent) if ".tmp-" in n] == []


def test_marker_summary(mini_corpus):
    with open(os.path.join(mini_corpus, MARKER_FILENAME), encoding="utf-8") as f:
        marker = json.load(f)
    opts, summary = marker["options"], marker["summary"]
    assert (opts["seed"], opts["preset"]) == (7, "tiny")
    assert (opts["train_speakers"], opts["dev_speakers"], opts["test_speakers"]) == (
        6,
        2,
        2,
    )
    assert summary["folders"]["TRAIN"]["utterances"] == 60
    assert summary["folders"]["TEST"]["utterances"] == 40
    assert {k: v["utterances"] for k, v in summary["splits"].items()} == {
        "train": 48,
        "dev": 16,
        "test": 16,
    }
    assert summary["total_utterances"] == 100
    assert 100 < summary["total_seconds"] < 600
    assert summary["phones_39_seen"] >= 35
    assert sum(summary["phones_61"].values()) > 1000


def test_sphere_headers(mini_corpus):
    for spk, stem, base in utterances(mini_corpus):
        with open(base + ".WAV", "rb") as f:
            data = f.read()
        assert data[:16] == b"NIST_1A\n   1024\n"
        head = data[:1024].decode("ascii")
        assert head.index("end_head\n") < 1024
        fields, samples = read_sphere(base + ".WAV")
        n = fields["sample_count"]
        assert len(data) == 1024 + 2 * n
        assert len(samples) == n
        utt_id = f"{spk[1:].lower()}_{stem.lower()}"
        assert f"utterance_id -s{len(utt_id)} {utt_id}\n" in head
        assert "database_id -s5 TIMIT\n" in head
        assert fields["channel_count"] == 1
        assert fields["sample_rate"] == 16000
        assert fields["sample_n_bytes"] == 2
        assert fields["sample_byte_format"] == "01"
        assert fields["sample_sig_bits"] == 16
        assert fields["sample_min"] == int(samples.min())
        assert fields["sample_max"] == int(samples.max())
        assert np.abs(samples).max() > 1000  # speech, not silence


def test_soundfile_and_speechbrain_read(mini_corpus):
    for _, _, base in utterances(mini_corpus):
        _, samples = read_sphere(base + ".WAV")
        data, rate = soundfile.read(base + ".WAV", dtype="int16")
        assert rate == 16000
        assert np.array_equal(data, samples)
    from speechbrain.dataio.dataio import read_audio

    sig = read_audio(base + ".WAV")
    assert sig.shape[0] == len(samples)


def test_phn(mini_corpus):
    allowed = set(TIMIT_61_PHONES)
    for _, _, base in utterances(mini_corpus):
        n = read_sphere(base + ".WAV")[0]["sample_count"]
        segs = read_segments(base + ".PHN")
        assert segs[0][0] == 0 and segs[-1][1] == n
        assert segs[0][2] == "h#" and segs[-1][2] == "h#"
        assert all(s[2] != "h#" for s in segs[1:-1])
        for prev, seg in zip(segs, segs[1:], strict=False):
            assert seg[0] == prev[1], base
            assert not (prev[2] == seg[2] == "pau")
        for i, (start, end, label) in enumerate(segs):
            assert end > start, base
            assert label in allowed, (base, label)
            if label in STOPS:
                assert segs[i - 1][2] == STOPS[label], (base, i)


def test_wrd_and_txt(mini_corpus):
    for _, _, base in utterances(mini_corpus):
        n = read_sphere(base + ".WAV")[0]["sample_count"]
        with open(base + ".TXT", encoding="ascii") as f:
            start, end, text = f.read().rstrip("\n").split(" ", 2)
        assert (int(start), int(end)) == (0, n)
        words = read_segments(base + ".WRD")
        assert [w[2] for w in words] == sentence_words(text)
        bounds = {s[0] for s in read_segments(base + ".PHN")} | {n}
        last = 0
        for start, end, _ in words:
            assert last <= start < end <= n
            assert start in bounds and end in bounds  # on phone boundaries
            last = end


def test_sentences(mini_corpus):
    texts = {}  # stem -> {speaker: text}
    for spk, stem, base in utterances(mini_corpus):
        with open(base + ".TXT", encoding="ascii") as f:
            texts.setdefault(stem, {})[spk] = f.read().split(" ", 2)[2].strip()
    assert set(texts["SA1"].values()) == {SA_SENTENCES[0]}
    assert set(texts["SA2"].values()) == {SA_SENTENCES[1]}
    assert len(texts["SA1"]) == 10
    si = [t for stem, d in texts.items() if stem.startswith("SI") for t in d.values()]
    assert len(si) == 30 and len(set(si)) == 30  # SI sentences are unique
    sx = {stem: d for stem, d in texts.items() if stem.startswith("SX")}
    assert max(len(d) for d in sx.values()) >= 2  # SX sentences are shared
    for d in sx.values():
        assert len(set(d.values())) == 1  # one text per SX number
    for d in texts.values():
        for t in d.values():
            assert 4 <= len(sentence_words(t)) <= 12


def test_speakers(mini_corpus):
    dev, core = set(DEV_SPEAKERS), set(CORE_TEST_SPEAKERS)
    dirs = speaker_dirs(mini_corpus)
    test = {spk.lower(): dr for folder, dr, spk, _ in dirs if folder == "TEST"}
    train = [spk.lower() for folder, _, spk, _ in dirs if folder == "TRAIN"]
    assert len([s for s in test if s in dev]) == 2
    assert len([s for s in test if s in core]) == 2
    for spk, dr in test.items():
        if spk in core:
            assert dr == CORE_TEST_SPEAKERS[spk]
    assert not (set(train) & (dev | core))
    assert {s[0] for s in train} == {"f", "m"}
    assert len(set(train)) == len(train)


def test_prepare_timit(mini_corpus, tmp_path):
    try:
        from timit_prepare import prepare_timit
    except ImportError:
        pytest.skip("timit_prepare.py (the TIMIT preparation) is not there yet")
    paths = [str(tmp_path / f"{k}.json") for k in ("train", "valid", "test")]
    prepare_timit(mini_corpus, *paths, phn_set=39)
    sizes = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        assert all(entry["phn"] and entry["wrd"] for entry in data.values())
        sizes.append(len(data))
    assert sizes == [48, 16, 16]


# ---------------------------------------------------------------------------
# Determinism, reuse, command line


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_same_seed_same_bytes(mini_corpus, tmp_path):
    out = tmp_path / "again"
    summary = make_mini_timit(str(out), seed=7, preset="tiny", num_workers=1)
    assert summary["reused"] is False
    assert tree_hashes(str(out)) == tree_hashes(mini_corpus)


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_cli_other_seed_differs(mini_corpus, tmp_path):
    out = tmp_path / "other"
    args = [
        "tools/make_mini_timit.py", str(out), "--preset", "tiny", "--seed", "8",
        "--train_speakers", "1", "--dev_speakers", "1", "--test_speakers", "1",
        "--quiet",
    ]  # fmt: skip
    proc = run_script(args)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TRAIN: 1 speakers, 10 utterances")
    assert lines[1].startswith("TEST: 2 speakers, 20 utterances")
    assert "made" in lines[-1]
    theirs = set(tree_hashes(mini_corpus).values())
    ours = tree_hashes(str(out))
    assert len(ours) == 30 * 4
    wavs = {h for rel, h in ours.items() if rel.endswith(".WAV")}
    assert not wavs & theirs
    # the same command again reuses the corpus
    proc = run_script(args)
    assert "reused" in proc.stdout.splitlines()[-1]


def test_reuse_and_conflicts(mini_corpus, tmp_path):
    before = os.path.getmtime(os.path.join(mini_corpus, MARKER_FILENAME))
    summary = make_mini_timit(mini_corpus, seed=7, preset="tiny")
    assert summary["reused"] is True
    assert summary["splits"]["train"]["utterances"] == 48
    assert os.path.getmtime(os.path.join(mini_corpus, MARKER_FILENAME)) == before
    with pytest.raises(MiniTimitError, match="other options"):
        make_mini_timit(mini_corpus, seed=8, preset="tiny")
    incomplete = tmp_path / "incomplete"
    (incomplete / "TRAIN").mkdir(parents=True)
    with pytest.raises(MiniTimitError, match="delete it or pick another folder"):
        make_mini_timit(str(incomplete), preset="tiny")
    with pytest.raises(MiniTimitError, match="preset"):
        make_mini_timit(str(tmp_path / "x"), preset="huge")


# ---------------------------------------------------------------------------
# Phoneme mapping and alignment


def test_phones_for_mnemonic():
    assert phones_for_mnemonic("'A@", "en-us") == ("aa", "r")
    assert phones_for_mnemonic(",A@", "en") == ("aa",)
    assert phones_for_mnemonic("t#", "en-us") == ("dx",)
    assert phones_for_mnemonic("_:", "en") == ("pau",)
    assert phones_for_mnemonic("_^_", "en") == ()
    assert phones_for_mnemonic("u:", "en-gb-scotland") == ("ux",)
    with pytest.raises(UnmappedPhonemeError, match="'Q9'"):
        phones_for_mnemonic("Q9", "en-us")


def test_every_word_maps_in_every_accent():
    """All the generator's words, in every accent used: every eSpeak mnemonic
    has a TIMIT counterpart (an unmapped one raises, naming it)."""
    from tools.mini_timit import sentences as mt

    words = (
        mt._NOUNS
        + [mt._plural(w) for w in mt._NOUNS]
        + [w for verb in mt._VERBS for w in verb]
        + mt._ADJECTIVES
        + mt._ADVERBS
        + mt._PLACES
        + mt._NAMES
        + mt._NUMBERS
        + mt._DEGREES
    )
    texts = list(SA_SENTENCES)
    texts += [" ".join(words[i : i + 12]) + "." for i in range(0, len(words), 12)]
    for template in mt._TEMPLATES:  # the templates' own words
        texts.append(re.sub(r"\{[A-Za-z]+\}", "cat", template))
    seen = set()
    for accent in DIALECT_ACCENTS.values():
        for text in texts:
            _, _, phonemes, _, _ = synthesize(text, accent)
            for mnemonic, _ in phonemes:
                seen.add(phones_for_mnemonic(mnemonic, accent))
    symbols = {p for group in seen for p in group}
    assert symbols <= set(TIMIT_61_PHONES)


def test_align_handmade_events():
    """Stops get closures: from the silence before them (h#, a pause, or the
    silent end of the phone before), else 60 % of the stop; pauses are merged;
    'in the', said by eSpeak as one word, is shared out."""
    sr = 1000
    audio = np.full(1000, 3000, dtype=np.int16)
    audio[:100] = 0  # leading silence
    audio[230:250] = 0  # silent end of the vowel before 'd'
    audio[900:] = 0  # trailing silence
    text = "Kids in the dent."
    events = [
        ("phoneme", "_", 0),
        ("word", 1, 100),
        ("phoneme", "k", 100),
        ("phoneme", "'I", 150),
        ("phoneme", "d", 250),
        ("phoneme", "z", 300),
        ("word", 6, 330),  # "in the": one event for two words
        ("phoneme", "I", 330),
        ("phoneme", "n", 360),
        ("phoneme", "_", 400),  # empty pause: no segment
        ("phoneme", "D", 400),
        ("phoneme", "@2", 450),
        ("phoneme", "_:", 500),
        ("phoneme", "_", 520),
        ("word", 13, 560),
        ("phoneme", "d", 560),
        ("phoneme", "'E", 600),
        ("phoneme", "n", 800),
        ("phoneme", "t", 850),
        ("phoneme", "_", 900),
    ]
    counts = {"in": 2, "the": 2, "kids": 4, "dent": 4}
    segs, words = align(audio, sr, events, text, "en-us", counts.get)
    assert segs == [
        [0, 50, "h#"],
        [50, 100, "kcl"],  # carved from the leading silence
        [100, 150, "k"],
        [150, 230, "ih"],
        [230, 250, "dcl"],  # the silent end of the vowel
        [250, 300, "d"],
        [300, 330, "z"],
        [330, 360, "ih"],
        [360, 400, "n"],
        [400, 450, "dh"],
        [450, 500, "ax"],
        [500, 530, "pau"],  # _: and _ merged
        [530, 560, "dcl"],  # carved from the pause
        [560, 600, "d"],
        [600, 800, "eh"],
        [800, 850, "n"],
        [850, 880, "tcl"],  # no silence before: 60 % of the stop
        [880, 900, "t"],
        [900, 1000, "h#"],
    ]
    spans = [(segs[a][2], segs[b][2]) for a, b in words]
    assert spans == [("kcl", "z"), ("ih", "n"), ("dh", "ax"), ("dcl", "t")]


def test_worker_errors_come_back():
    """An error in a synthesis process is raised in the caller, with its type."""
    import pickle

    from tools.mini_timit.corpus import _run_in_fresh_process

    job = {
        "synthesiser": "espeak", "voice": "en-xx-nowhere", "accent": "en-us",
        "pitch": 50, "pitch_range": 50,
        "utterances": [("Hello.", 170, 1, 0.1, 0.1, [1])],
    }  # fmt: skip
    with pytest.raises(MiniTimitError, match="no voice"):
        _run_in_fresh_process(job)
    err = pickle.loads(pickle.dumps(UnmappedPhonemeError("Q9", "en")))
    assert (err.mnemonic, err.accent) == ("Q9", "en") and "'Q9'" in str(err)


def test_sphere_round_trip(tmp_path):
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = str(tmp_path / "X.WAV")
    write_sphere(path, samples, "abc0_sx3")
    fields, back = read_sphere(path)
    assert np.array_equal(back, samples)
    assert fields["sample_count"] == 6 and fields["utterance_id"] == "abc0_sx3"
    assert os.path.getsize(path) == 1024 + 12
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == 16000 and np.array_equal(data, samples)


def test_demo_core_preset_has_the_whole_core_test_and_demo_training_speakers():
    """The plan only (no synthesis): 24 core-test and 16 dev speakers, 8 usable
    sentences each, and the demo preset's training speakers unchanged."""
    from tools.mini_timit.corpus import PRESETS, _plan

    core = _plan(1234, PRESETS["demo_core"], 5, 3)
    demo = _plan(1234, PRESETS["demo"], 5, 3)
    test = [s for s in core if s.role == "test"]
    dev = [s for s in core if s.role == "dev"]
    assert {s.spk_id.lower() for s in test} == set(CORE_TEST_SPEAKERS)
    assert all(s.dr == CORE_TEST_SPEAKERS[s.spk_id.lower()] for s in test)
    assert len(dev) == 16 and {s.spk_id.lower() for s in dev} <= set(DEV_SPEAKERS)
    assert sorted(s.dr for s in dev) == sorted(2 * list(DIALECT_ACCENTS))
    usable = [u for s in test for u in s.utterances if not u.stem.startswith("SA")]
    assert len(usable) == 192
    # Same seed: the same training speakers, sentences, rates and noise seeds.
    assert [s for s in core if s.role == "train"] == [
        s for s in demo if s.role == "train"
    ]
