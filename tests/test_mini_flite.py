"""The mini corpus's second synthesiser, Flite (tools/mini_timit/flite.py), and
the corpora it speaks: ``--synthesiser flite|both`` and the ``_mixed`` presets.

Tests that synthesise need the Debian package ``flite``; without it they are
skipped with the reason (the package and the command that installs it). The
errors for bad input and for a missing Flite are tested without it.
"""

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
from conftest import run_script
from test_mini_timit import read_segments, speaker_dirs, tree_hashes, utterances

from timit_prepare import fold_phones
from tools.mini_timit import (
    MARKER_FILENAME,
    PRESETS,
    SA_SENTENCES,
    TIMIT_61_PHONES,
    MiniTimitError,
    align,
    flite,
    make_mini_timit,
    phones_for_flite,
    sentence_words,
)
from tools.mini_timit import corpus as corpus_module
from tools.mini_timit.errors import UnmappedFlitePhoneError
from tools.mini_timit.phones import _FLITE_PHONES
from tools.mini_timit.pool import make_mini_pool

FLITE_MISSING = flite.flite_missing()
needs_flite = pytest.mark.skipif(
    FLITE_MISSING is not None, reason=f"Flite is not installed: {FLITE_MISSING}"
)
STOPS = {"b": "bcl", "d": "dcl", "g": "gcl", "p": "pcl", "t": "tcl", "k": "kcl"}
STOPS.update(ch="tcl", jh="dcl")


def labels(text, voice="slt", **kwargs):
    """The TIMIT symbols of ``text`` said by a Flite voice, as the corpus
    writes them (before resampling, which keeps the order)."""
    audio, sr, events = flite.synthesize(text, voice, **kwargs)
    segments, words = align(
        audio, sr, events, text, voice, phone_map=phones_for_flite,
        closure_in_stop=True,
    )  # fmt: skip
    return [s[2] for s in segments], segments, words


# ---------------------------------------------------------------------------
# The phone table: Flite's CMU phones -> TIMIT's 61


def test_flite_phone_table():
    # CMU's 39 phones, ax and pau: the table holds them all, one to one.
    assert len(_FLITE_PHONES) == 41
    for phone, symbols in _FLITE_PHONES.items():
        assert symbols == (phone,) and phone in TIMIT_61_PHONES
    assert phones_for_flite("ax", "slt") == ("ax",)
    assert phones_for_flite("pau", "awb") == ("pau",)
    with pytest.raises(UnmappedFlitePhoneError, match="'dx' .*voice rms"):
        phones_for_flite("dx", "rms")
    err = pickle.loads(pickle.dumps(UnmappedFlitePhoneError("q9", "slt")))
    assert (err.phone, err.voice) == ("q9", "slt") and "'q9'" in str(err)


@needs_flite
def test_known_words_get_timits_symbols():
    """Words whose TIMIT-style transcription is known, said by each voice:
    Flite's phones keep their names, stops get their closures, silences at
    the ends are h#; folded to 39 as timit_prepare.py folds TIMIT."""
    expected = {
        "Dark water.": "h# dcl d aa r kcl k w ao tcl t er h#",
        "The judge sang.": "h# dh ax dcl jh ah dcl jh s ae ng h#",
        "Should a boy go?": "h# sh uh dcl d ax bcl b oy gcl g ow h#",
    }
    for voice in sorted(flite.FLITE_VOICES):
        for text, want in expected.items():
            got, _, _ = labels(text, voice)
            assert " ".join(got) == want, (voice, text)
    got, _, _ = labels("Dark water.", "slt")
    assert fold_phones(got, 39) == ("sil sil d aa r sil k w aa sil t er sil".split())
    # TIMIT's own SA1, the sentence every speaker reads
    got, segments, words = labels(SA_SENTENCES[0], "awb")
    assert " ".join(got) == (
        "h# sh iy hh ae dcl d y ao r dcl d aa r kcl k s uw tcl t ih n gcl g r iy "
        "s iy w aa sh w ao tcl t er ao l y ih r h#"
    )
    # each word spans its own phones: "dark" is dcl d aa r kcl k
    first, last = words[3]
    assert got[first : last + 1] == "dcl d aa r kcl k".split()
    assert len(words) == len(sentence_words(SA_SENTENCES[0]))


@needs_flite
def test_every_word_of_the_generator_maps():
    """Every word the sentence generator uses, through Flite: every phone is in
    the table, and every one of the table's phones occurs. Said by kal16 (the
    fastest voice): the four voices share Flite's lexicon and letter-to-sound
    rules, and give the same phones (measured for the whole vocabulary)."""
    from tools.mini_timit import sentences as mt

    words = (
        mt._NOUNS + [mt._plural(w) for w in mt._NOUNS]
        + [w for verb in mt._VERBS for w in verb] + mt._ADJECTIVES + mt._ADVERBS
        + mt._PLACES + mt._NAMES + mt._NUMBERS + mt._DEGREES
    )  # fmt: skip
    texts = list(SA_SENTENCES)
    texts += [" ".join(words[i : i + 12]) + "." for i in range(0, len(words), 12)]
    texts += [re.sub(r"\{[A-Za-z0-9]+\}", "cat", t) for t in mt._TEMPLATES]
    seen = set()
    for text in texts:
        flite.check_text(text)
        _, _, events = flite.synthesize(text, "kal16")
        seen |= {p for kind, p, _ in events if kind == "phoneme"}
    assert seen == set(_FLITE_PHONES)


@needs_flite
def test_synthesis_is_a_function_of_its_arguments():
    """Flite's random state is seeded per utterance: an utterance does not
    depend on what was said before it; rate and pitch take effect."""
    first, _, _ = flite.synthesize("A cat sat.", "slt", 1.0, 180.0, 5)
    flite.synthesize("Something else entirely.", "slt", 1.3, 150.0, 9)
    again, _, _ = flite.synthesize("A cat sat.", "slt", 1.0, 180.0, 5)
    assert np.array_equal(first, again)
    slow, _, _ = flite.synthesize("A cat sat.", "slt", 1.5, 180.0, 5)
    assert len(slow) > 1.3 * len(first)
    low, _, _ = flite.synthesize("A cat sat.", "slt", 1.0, 120.0, 5)
    assert len(low) == len(first) and not np.array_equal(low, first)


# ---------------------------------------------------------------------------
# Bad input: clear errors before anything is written


@pytest.mark.parametrize(
    "text, says",
    [
        ("東京 is big.", "not letters"),
        ("She had 2 dogs.", "'2' are not letters"),
        ("A well-known cat.", "'well-known' is not one word"),
        ("?!", "holds no word"),
    ],
)
def test_texts_flite_cannot_phonetise(text, says):
    with pytest.raises(MiniTimitError, match=f"Flite cannot phonetise .*{says}"):
        flite.check_text(text)
    with pytest.raises(MiniTimitError, match="Flite cannot phonetise"):
        flite.synthesize(text, "slt")  # checked before Flite is loaded


def test_bad_synthesiser_and_voice_on_the_command_line(tmp_path):
    out = tmp_path / "corpus"
    cases = [
        (["--synthesiser", "festival"], "ERROR: synthesiser 'festival' is not known: "
         "use espeak (eSpeak NG), flite (Flite) or both"),
        (["--synthesiser", "flite", "--flite_voices", "slt", "kevin"],
         "ERROR: --flite_voices: Flite has no voice 'kevin'; its voices here are "
         "awb, kal16, rms, slt"),
        (["--preset", "tiny_mixed", "--synthesiser", "espeak"],
         "ERROR: preset 'tiny_mixed' is spoken by both synthesisers, not 'espeak'"),
    ]  # fmt: skip
    for extra, message in cases:
        args = ["tools/make_mini_timit.py", str(out), "--preset", "tiny", "--quiet"]
        if "--preset" in extra:
            args = args[:2] + ["--quiet"]
        proc = run_script([*args, *extra], check=False)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert os.listdir(tmp_path) == []  # nothing written, no tmp folder


def test_a_text_flite_cannot_phonetise_stops_the_corpus_before_writing(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(
        corpus_module, "SA_SENTENCES", ("She had 2 dark suits.", SA_SENTENCES[1])
    )
    monkeypatch.setattr(flite, "flite_missing", lambda voices=(): None)
    with pytest.raises(
        MiniTimitError,
        match=r"speaker F[A-Z]{3}0, SA1: Flite cannot phonetise "
        r"'She had 2 dark suits\.': '2' are not letters",
    ):
        make_mini_timit(str(tmp_path / "c"), seed=7, preset="tiny",
                        synthesiser="flite")  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_without_flite_a_flite_corpus_names_the_package(tmp_path, monkeypatch):
    """Simulated: no libflite on the machine. eSpeak NG corpora do not need it."""
    monkeypatch.setattr(flite.ctypes.util, "find_library", lambda name: None)
    for synthesiser in ("flite", "both"):
        with pytest.raises(
            MiniTimitError,
            match=r"needs Flite: the library libflite.so is not installed\. .*"
            r"package 'flite'.*sudo apt-get install -y flite",
        ):
            make_mini_timit(str(tmp_path / "c"), seed=7, preset="tiny",
                            synthesiser=synthesiser)  # fmt: skip
    assert os.listdir(tmp_path) == []
    assert "apt-get install -y flite" in flite.flite_missing()


# ---------------------------------------------------------------------------
# The plan: who speaks (no synthesis)


def test_the_mixed_preset_gives_every_split_both_synthesisers():
    """demo_core_mixed: demo_core's speakers and sentences, half of every
    split and of each sex spoken by Flite, women by slt; its eSpeak NG
    speakers are demo_core's exactly."""
    core = corpus_module._plan(1234, PRESETS["demo_core"], 5, 3)
    counts = corpus_module._resolve_counts("demo_core_mixed", None, None, None)
    mixed = corpus_module._plan(1234, counts, 5, 3)
    synthesiser, voices = corpus_module.resolve_synthesiser(
        "demo_core_mixed", None, None
    )
    assert synthesiser == "both" and voices == ("awb", "kal16", "rms", "slt")
    corpus_module._assign_voices(mixed, 1234, synthesiser, voices, (4, 5, 6))
    for role, n in (("train", 48), ("dev", 16), ("test", 24)):
        assert sum(s.role == role and s.synthesiser == "flite" for s in mixed) == n / 2
        for sex in "FM":  # the core test set: 8 women, 16 men
            families = [s.synthesiser for s in mixed if (s.role, s.sex) == (role, sex)]
            assert families.count("flite") == families.count("espeak") > 0
    for ours, theirs in zip(mixed, core, strict=True):
        assert ours.spk_id == theirs.spk_id
        assert [u.text for u in ours.utterances] == [u.text for u in theirs.utterances]
        if ours.synthesiser == "espeak":
            assert ours == theirs
        else:
            assert (
                ours.flite_voice == "slt"
                if ours.sex == "F"
                else (ours.flite_voice in ("awb", "kal16", "rms"))
            )
            assert 0.85 <= ours.stretch <= 1.2
            assert (ours.f0 is None) == (ours.flite_voice == "rms")
    for role in ("train", "dev", "test"):  # men's voices in turn in each split
        men = [s.flite_voice for s in mixed if (s.role, s.sex, s.synthesiser) == (
            role, "M", "flite")]  # fmt: skip
        counts = [men.count(v) for v in ("awb", "kal16", "rms")]
        assert max(counts) - min(counts) <= 1 and sum(counts) == len(men)


# ---------------------------------------------------------------------------
# The corpora


@pytest.fixture
def mixed_corpus(mini_mixed_corpus):
    """The tiny mixed corpus (seed 7, as the session's eSpeak NG corpus)."""
    return mini_mixed_corpus


def families_of(corpus):
    with open(os.path.join(corpus, MARKER_FILENAME), encoding="utf-8") as f:
        marker = json.load(f)
    return marker, {
        s["id"]: s for folder in marker["summary"]["speakers"].values() for s in folder
    }


def test_the_mixed_corpus_records_who_speaks(mixed_corpus):
    marker, speakers = families_of(mixed_corpus)
    assert marker["options"]["synthesiser"] == "both"
    assert marker["options"]["preset"] == "tiny_mixed"
    assert "flite_voices" not in marker["options"]  # the default, all four
    assert marker["summary"]["synthesisers"] == {
        "espeak": {"train": 3, "dev": 1, "test": 1},
        "flite": {"train": 3, "dev": 1, "test": 1},
    }
    for _, _, spk, _ in speaker_dirs(mixed_corpus):
        entry = speakers[spk]
        if entry["synthesiser"] == "flite":
            assert entry["voice"] in flite.FLITE_VOICES
            assert entry["voice"] == "slt" if spk[0] == "F" else entry["voice"] != "slt"
        else:
            assert entry["voice"] == f"{entry['accent']}+{entry['variant']}"


def test_the_mixed_corpus_is_timits_layout_with_good_labels(mixed_corpus, tmp_path):
    """.PHN: TIMIT symbols covering the audio, h# at both ends, every stop
    after its closure; .WRD: the text's words on phone boundaries; and
    timit_prepare.py reads it as it reads TIMIT."""
    from timit_prepare import prepare_timit, read_sphere

    _, speakers = families_of(mixed_corpus)
    checked = {"espeak": 0, "flite": 0}
    for spk, _, base in utterances(mixed_corpus):
        n = read_sphere(base + ".WAV")[0]["sample_count"]
        segs = read_segments(base + ".PHN")
        assert segs[0][0] == 0 and segs[-1][1] == n
        assert segs[0][2] == segs[-1][2] == "h#"
        for i, (start, end, label) in enumerate(segs):
            assert end > start and label in TIMIT_61_PHONES, (base, label)
            if i:
                assert start == segs[i - 1][1]
            if label in STOPS:
                assert segs[i - 1][2] == STOPS[label], (base, i)
        with open(base + ".TXT", encoding="ascii") as f:
            text = f.read().split(" ", 2)[2].strip()
        words = read_segments(base + ".WRD")
        assert [w[2] for w in words] == sentence_words(text)
        bounds = {s[0] for s in segs} | {n}
        assert all(w[0] in bounds and w[1] in bounds for w in words)
        checked[speakers[spk]["synthesiser"]] += 1
    assert checked == {"espeak": 50, "flite": 50}
    paths = [str(tmp_path / f"{k}.json") for k in ("train", "valid", "test")]
    prepare_timit(mixed_corpus, *paths, phn_set=39)
    sizes = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            sizes.append(len(json.load(f)))
    assert sizes == [48, 16, 16]


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_same_arguments_same_bytes_and_each_family_is_its_own_corpus(
    mixed_corpus, mini_corpus, tmp_path
):
    """The same arguments again: the same bytes. And the mixed corpus's eSpeak
    NG speakers are the eSpeak NG corpus's (the session's, same seed), file
    for file: only who speaks changed."""
    again = tmp_path / "again"
    proc = run_script(
        ["tools/make_mini_timit.py", str(again), "--preset", "tiny_mixed",
         "--seed", "7", "--quiet", "--num_workers", "1"]
    )  # fmt: skip
    assert "voices: eSpeak NG train 3, dev 1, test 1; Flite train 3" in proc.stdout
    ours = tree_hashes(mixed_corpus)
    assert tree_hashes(str(again)) == ours
    _, speakers = families_of(mixed_corpus)
    theirs = tree_hashes(mini_corpus)
    for rel, digest in ours.items():
        family = speakers[rel.split(os.sep)[2]]["synthesiser"]
        assert (theirs[rel] == digest) == (family == "espeak"), rel


def test_a_mixed_corpus_gets_a_mixed_pool(mixed_corpus, tmp_path):
    corpus = str(tmp_path / "TIMIT")
    shutil.copytree(mixed_corpus, corpus)
    summary = make_mini_pool(corpus, pool_speakers=2, per_speaker=1)
    assert summary["synthesisers"] == {"espeak": {"pool": 1}, "flite": {"pool": 1}}
    voices = [s["voice"] for s in summary["speaker_voices"]]
    assert len(voices) == 2 and sum(v in flite.FLITE_VOICES for v in voices) == 1
