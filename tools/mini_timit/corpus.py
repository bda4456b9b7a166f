"""The corpus: plan (speakers, sentences, synthesiser and voice), synthesis per
speaker in a fresh process, and the files in TIMIT's layout."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from timit_prepare import DEV_SPEAKERS as _DEV_SPEAKERS
from timit_prepare import (
    PHONE_MAP_61_39,
    PHONE_SETS,
    TEST_SPEAKERS,
    TIMIT_61_PHONES,
)
from tools.mini_timit import flite
from tools.mini_timit.align import _enforce_min_length, align
from tools.mini_timit.audio import SAMPLE_RATE, _noise, _resample, write_sphere
from tools.mini_timit.errors import MiniTimitError
from tools.mini_timit.espeak import _get_espeak, synthesize
from tools.mini_timit.phones import phones_for_flite
from tools.mini_timit.sentences import SentenceGenerator, sentence_words

logger = logging.getLogger(__name__)

MARKER_FILENAME = "MINI_TIMIT.json"
_FORMAT_VERSION = 1

# TIMIT's symbols, the 61 -> 39 folding (for the coverage report) and the
# standard dev speakers come from the preparation script, so the corpus and its
# reader cannot disagree.
FOLD_61_39 = PHONE_MAP_61_39  # None = dropped (q)
_PHONES_39 = frozenset(PHONE_SETS[39])
DEV_SPEAKERS = tuple(sorted(_DEV_SPEAKERS))

# The 24 speakers of TIMIT's core test set with their dialect region.
CORE_TEST_SPEAKERS = {
    "mdab0": "DR1", "mwbt0": "DR1", "felc0": "DR1",
    "mtas1": "DR2", "mwew0": "DR2", "fpas0": "DR2",
    "mjmp0": "DR3", "mlnt0": "DR3", "fpkt0": "DR3",
    "mlll0": "DR4", "mtls0": "DR4", "fjlm0": "DR4",
    "mbpm0": "DR5", "mklt0": "DR5", "fnlp0": "DR5",
    "mcmj0": "DR6", "mjdh0": "DR6", "fmgd0": "DR6",
    "mgrt0": "DR7", "mnjm0": "DR7", "fdhc0": "DR7",
    "mjln0": "DR8", "mpam0": "DR8", "fmld0": "DR8",
}  # fmt: skip
assert set(CORE_TEST_SPEAKERS) == TEST_SPEAKERS

# One eSpeak NG English accent per dialect region (DR6 is New York City in
# TIMIT too; the others are simply eSpeak's remaining English accents).
DIALECT_ACCENTS = {
    "DR1": "en-gb-x-rp",
    "DR2": "en",
    "DR3": "en-gb-x-gbclan",
    "DR4": "en-gb-x-gbcwmd",
    "DR5": "en-029",
    "DR6": "en-us-nyc",
    "DR7": "en-us",
    "DR8": "en-gb-scotland",
}
_DIALECTS = tuple(DIALECT_ACCENTS)

# eSpeak voice variants (espeak-ng-data/voices/!v) by speaker sex.
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "belinda", "linda", "aunty")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "Andy", "Lee")

# Speaker counts of the presets. "Usable" utterances (SA1/SA2 excluded, as the
# preparation does) are 8 per speaker with the default SX/SI counts.
# "demo_core" is "demo" with TIMIT's whole core test set (24 speakers, 192
# utterances) and 16 dev speakers (128 utterances, two per dialect region), so
# that a 10 % relative PER difference can come out significant; its training
# speakers and their audio are the same as "demo"'s (same seed: the train
# speakers are planned and numbered first).
# A "_mixed" preset is the preset of its name voiced by both synthesisers
# (``synthesiser`` "both"): the same speakers, sentences and noise, half of
# each split's speakers (and of each sex) spoken by Flite.
PRESETS = {
    "tiny": {"train_speakers": 6, "dev_speakers": 2, "test_speakers": 2},
    "demo": {"train_speakers": 48, "dev_speakers": 4, "test_speakers": 4},
    "demo_core": {"train_speakers": 48, "dev_speakers": 16, "test_speakers": 24},
    "tiny_mixed": {
        "train_speakers": 6, "dev_speakers": 2, "test_speakers": 2,
        "synthesiser": "both",
    },
    "demo_core_mixed": {
        "train_speakers": 48, "dev_speakers": 16, "test_speakers": 24,
        "synthesiser": "both",
    },
}  # fmt: skip

# The synthesisers a corpus is spoken by (``synthesiser``): eSpeak NG, Flite,
# or both (half the speakers of every split each).
SYNTHESISERS = {
    "espeak": "eSpeak NG",
    "flite": "Flite",
    "both": "eSpeak NG and Flite",
}
VOICE_FAMILIES = ("espeak", "flite")  # a speaker's synthesiser
DEFAULT_FLITE_VOICES = tuple(sorted(flite.FLITE_VOICES))
# numpy streams of the synthesiser choice (which speaker of a split is spoken
# by Flite, and the first voice of each split), a Flite speaker's rate and
# pitch, and its utterances' rates; the corpus's other streams are 0-3, the
# pool's 10-13.
_CORPUS_VOICE_STREAMS = (4, 5, 6)
# A Flite speaker's duration stretch and mean pitch (Hz, for the voices that
# follow it), and each utterance's stretch relative to its speaker's.
_FLITE_STRETCH = (0.85, 1.2)
_FLITE_F0 = {"F": (150.0, 230.0), "M": (85.0, 140.0)}
_FLITE_UTTERANCE_STRETCH = (0.93, 1.07)

# The two dialect sentences every TIMIT speaker reads.
SA_SENTENCES = (
    "She had your dark suit in greasy wash water all year.",
    "Don't ask me to carry an oily rag like that.",
)

# Silence added around eSpeak's output (seconds): TIMIT's h# segments.
_LEAD_SILENCE_S = (0.12, 0.30)
_TRAIL_SILENCE_S = (0.12, 0.30)
_SNR_DB = (15.0, 30.0)
# Stop releases and the closure written before them.
_MIN_SEGMENT = 32  # samples at 16 kHz (2 ms): no segment is shorter


# ---------------------------------------------------------------------------
# Corpus plan


@dataclass
class _Speaker:
    spk_id: str  # e.g. "FABC0"
    folder: str  # "TRAIN" or "TEST"
    dr: str  # "DR1".."DR8"
    role: str  # "train", "dev", "test"
    sex: str  # "F" or "M"
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: float
    utterances: list = field(default_factory=list)  # of _Utterance
    synthesiser: str = "espeak"  # or "flite"
    flite_voice: str = ""  # Flite speakers: awb, kal16, rms or slt
    f0: float | None = None  # Flite: mean pitch in Hz (None: the voice's own)
    stretch: float = 1.0  # Flite: duration stretch

    @property
    def voice(self):
        """The voice as the synthesiser names it: ``en-us+f2``, ``slt``."""
        if self.synthesiser == "flite":
            return self.flite_voice
        return f"{self.accent}+{self.variant}"


@dataclass
class _Utterance:
    stem: str  # "SA1", "SX47", "SI1203"
    text: str
    rate: int = 0
    espeak_seed: int = 0
    lead_s: float = 0.0  # silence before and after the speech
    trail_s: float = 0.0
    stretch: float = 1.0  # Flite: duration stretch of this utterance


def _resolve_counts(preset, train_speakers, dev_speakers, test_speakers):
    if preset not in PRESETS:
        raise MiniTimitError(
            f"preset={preset!r} is not known; use one of {', '.join(PRESETS)}"
        )
    counts = {k: v for k, v in PRESETS[preset].items() if k != "synthesiser"}
    for key, value in (
        ("train_speakers", train_speakers),
        ("dev_speakers", dev_speakers),
        ("test_speakers", test_speakers),
    ):
        if value is not None:
            counts[key] = int(value)
    limits = {
        "train_speakers": (1, 26**3),
        "dev_speakers": (1, len(DEV_SPEAKERS)),
        "test_speakers": (1, len(CORE_TEST_SPEAKERS)),
    }
    for key, (lo, hi) in limits.items():
        if not lo <= counts[key] <= hi:
            raise MiniTimitError(f"{key}={counts[key]} must be in [{lo}, {hi}]")
    return counts


def _pick_balanced(rng, ids, n):
    """``n`` of ``ids`` (lower case), female and male in turn."""
    pools = [[p for p in sorted(ids) if p.startswith(sex)] for sex in ("f", "m")]
    pools = [[pool[j] for j in rng.permutation(len(pool))] for pool in pools]
    out = []
    while len(out) < n:
        pool = pools[len(out) % 2] or pools[(len(out) + 1) % 2]
        out.append(pool.pop(0))
    return out


def _new_speaker(rng, spk_id, folder, dr, role):
    """A speaker's voice (variant, pitch, range, rate), drawn from ``rng``."""
    sex = spk_id[0].upper()
    variants = FEMALE_VARIANTS if sex == "F" else MALE_VARIANTS
    variant = variants[int(rng.integers(len(variants)))]
    pitch = int(rng.integers(40, 80) if sex == "F" else rng.integers(20, 60))
    pitch_range = int(rng.integers(30, 90))
    rate = float(rng.uniform(140, 195))
    accent = DIALECT_ACCENTS[dr]
    return _Speaker(
        spk_id.upper(), folder, dr, role, sex, accent, variant, pitch, pitch_range, rate
    )


_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _fresh_speaker_id(rng, i, taken):
    """The i-th new speaker's ID (``FABC0``), not in ``taken`` (added to it):
    female and male alternate per round of the dialect regions."""
    sex = "F" if (i + i // len(_DIALECTS)) % 2 == 0 else "M"
    while True:
        spk = sex + "".join(rng.choice(_LETTERS, 3)) + "0"
        if spk.lower() not in taken:
            taken.add(spk.lower())
            return spk


def _plan(seed, counts, sx_per_speaker, si_per_speaker):
    """Speakers with their utterances, in a fixed order; all from ``seed``."""
    rng = np.random.default_rng([seed, 0])
    speakers = []
    taken = set(DEV_SPEAKERS) | set(CORE_TEST_SPEAKERS)

    def add(spk_id, folder, dr, role):
        speakers.append(_new_speaker(rng, spk_id, folder, dr, role))

    # Train speakers: the dialect regions in turn, female and male alternating
    # per round so that every region gets both.
    for i in range(counts["train_speakers"]):
        spk = _fresh_speaker_id(rng, i, taken)
        add(spk, "TRAIN", _DIALECTS[i % len(_DIALECTS)], "train")
    # TEST: standard dev speakers (spread over the regions) and core test
    # speakers (in their real region).
    offset = int(rng.integers(len(_DIALECTS)))
    dev = _pick_balanced(rng, DEV_SPEAKERS, counts["dev_speakers"])
    test = _pick_balanced(rng, CORE_TEST_SPEAKERS, counts["test_speakers"])
    for j, spk in enumerate(dev):
        add(spk, "TEST", _DIALECTS[(offset + 3 * j) % len(_DIALECTS)], "dev")
    for spk in test:
        add(spk, "TEST", CORE_TEST_SPEAKERS[spk], "test")

    # Sentences. SX texts are shared by about 3 speakers within TRAIN, and
    # within TEST (never across: test sentences are not trained on); SI texts
    # are unique.
    gen = SentenceGenerator(np.random.default_rng([seed, 1]))
    used = {s.lower() for s in SA_SENTENCES}

    def fresh():
        while True:
            text = gen.sentence()
            if text.lower() not in used:
                used.add(text.lower())
                return text

    sx_number = 3
    si_number = 453
    for folder in ("TRAIN", "TEST"):
        group = [s for s in speakers if s.folder == folder]
        if not group:
            continue
        pool_size = max(sx_per_speaker, -(-len(group) * sx_per_speaker // 3))
        pool = [(sx_number + k, fresh()) for k in range(pool_size)]
        sx_number += pool_size
        for k, spk in enumerate(group):
            chosen = [
                pool[(k * sx_per_speaker + j) % pool_size]
                for j in range(sx_per_speaker)
            ]
            spk.utterances = [_Utterance("SA1", SA_SENTENCES[0])]
            spk.utterances.append(_Utterance("SA2", SA_SENTENCES[1]))
            spk.utterances += [_Utterance(f"SX{num}", text) for num, text in chosen]
            for _ in range(si_per_speaker):
                spk.utterances.append(_Utterance(f"SI{si_number}", fresh()))
                si_number += 1
    # per-utterance rate and eSpeak seed
    for i, spk in enumerate(speakers):
        urng = np.random.default_rng([seed, 2, i])
        for utt in spk.utterances:
            utt.rate = int(round(spk.rate * urng.uniform(0.9, 1.1)))
            utt.espeak_seed = int(urng.integers(1, 2**31 - 1))
            utt.lead_s = float(urng.uniform(*_LEAD_SILENCE_S))
            utt.trail_s = float(urng.uniform(*_TRAIL_SILENCE_S))
    return speakers


def resolve_synthesiser(preset, synthesiser, flite_voices):
    """(synthesiser, Flite voices) of a corpus: ``synthesiser`` or the
    preset's (else eSpeak NG); the voices sorted, the four by default.

    Raises MiniTimitError for a synthesiser that is neither, one that
    contradicts a mixed preset, or a voice Flite does not have."""
    own = PRESETS.get(preset, {}).get("synthesiser")
    if synthesiser is None:
        synthesiser = own or "espeak"
    if synthesiser not in SYNTHESISERS:
        raise MiniTimitError(
            f"synthesiser {synthesiser!r} is not known: use espeak (eSpeak NG), "
            "flite (Flite) or both (half the speakers of every split each)"
        )
    if own and synthesiser != own:
        plain = preset.removesuffix("_mixed")
        raise MiniTimitError(
            f"preset {preset!r} is spoken by both synthesisers, not "
            f"{synthesiser!r}: leave out --synthesiser, or use preset {plain!r} "
            f"with --synthesiser {synthesiser}"
        )
    voices = DEFAULT_FLITE_VOICES if flite_voices is None else flite_voices
    if isinstance(voices, str):
        voices = [voices]
    flite.check_voices(voices, "--flite_voices")
    return synthesiser, tuple(sorted(set(voices)))


def _assign_voices(speakers, seed, synthesiser, flite_voices, streams):
    """Decides which speakers Flite speaks, and their voices; eSpeak NG
    speakers are left as planned (so a mixed corpus's eSpeak NG speakers are
    those of the eSpeak NG corpus, byte for byte).

    ``both``: in each split (role), the speakers ordered by sex, then at
    random within a sex, take eSpeak NG and Flite in turn, so that every
    split with two speakers or more has both and each sex is split half and
    half. A Flite speaker gets a voice of its sex (slt for women; awb, kal16
    and rms in turn for men, within each split; any of ``flite_voices`` when
    none is of its sex), a duration stretch and, where the voice follows it,
    a mean pitch; each utterance a stretch around its speaker's.
    ``streams``: the numpy streams of the choice (and the first voice of
    each split), the speakers' rate and pitch, and the utterances."""
    if synthesiser == "espeak":
        return speakers
    choice_stream, voice_stream, utterance_stream = streams
    rng = np.random.default_rng([seed, choice_stream])
    if synthesiser == "flite":
        chosen = set(range(len(speakers)))
    else:
        chosen = set()
        for role in dict.fromkeys(s.role for s in speakers):
            order = []
            for sex in ("F", "M"):
                members = [
                    i for i, s in enumerate(speakers) if s.role == role and s.sex == sex
                ]
                order += [members[j] for j in rng.permutation(len(members))]
            chosen |= set(order[1::2])
    # The voices of a sex in turn within each split, from a random first one,
    # so that no voice is missing from a split where another appears twice.
    voice_of = {}
    groups = {}
    for i in sorted(chosen):
        groups.setdefault((speakers[i].role, speakers[i].sex), []).append(i)
    for (_, sex), members in groups.items():
        voices = [v for v in flite_voices if flite.FLITE_VOICES[v] == sex]
        voices = voices or list(flite_voices)
        first = int(rng.integers(len(voices)))
        for k, i in enumerate(members):
            voice_of[i] = voices[(first + k) % len(voices)]
    for i in sorted(chosen):
        spk = speakers[i]
        rng = np.random.default_rng([seed, voice_stream, i])
        spk.synthesiser = "flite"
        spk.flite_voice = voice_of[i]
        spk.stretch = round(float(rng.uniform(*_FLITE_STRETCH)), 4)
        f0 = round(float(rng.uniform(*_FLITE_F0[spk.sex])), 1)
        spk.f0 = f0 if spk.flite_voice in flite.F0_VOICES else None
        urng = np.random.default_rng([seed, utterance_stream, i])
        for utt in spk.utterances:
            utt.stretch = round(
                spk.stretch * float(urng.uniform(*_FLITE_UTTERANCE_STRETCH)), 4
            )
    return speakers


def _check_flite(speakers):
    """Before anything is written: Flite and its voices are there, and it can
    phonetise every text its speakers read."""
    needed = sorted({s.flite_voice for s in speakers if s.synthesiser == "flite"})
    if not needed:
        return
    reason = flite.flite_missing(needed)
    if reason:
        raise MiniTimitError(f"a corpus with Flite speakers needs Flite: {reason}")
    for spk in speakers:
        if spk.synthesiser == "flite":
            for utt in spk.utterances:
                try:
                    flite.check_text(utt.text)
                except MiniTimitError as err:
                    raise MiniTimitError(
                        f"speaker {spk.spk_id}, {utt.stem}: {err}"
                    ) from None


# ---------------------------------------------------------------------------
# Synthesis of one speaker (runs in a fresh process)


def _synth_speaker(job):
    """Synthesises, aligns and renders the utterances of one speaker.

    Run in a fresh process per speaker (``_run_in_fresh_process``) so that
    eSpeak's carried-over state is the same on every run (see the module
    doc). Each utterance is padded with the silences of its ``h#`` segments
    before it is aligned, then resampled to 16 kHz with noise added
    (``_render``). ``job``: ``{"synthesiser": "espeak" or "flite", "voice",
    ..., "utterances": [...]}`` (``_speaker_job``).

    Returns a list of (int16 samples, segments, word spans), one per utterance.
    """
    if job["synthesiser"] == "flite":
        return _synth_flite_speaker(job)
    voice, accent = job["voice"], job["accent"]
    pitch, prange, utterances = job["pitch"], job["pitch_range"], job["utterances"]
    engine = _get_espeak()

    def counter(word):
        return engine.count_phonemes(word, voice)

    out = []
    for text, rate, seed, lead_s, trail_s, render_seed in utterances:
        audio, sr, _, _, events = synthesize(text, voice, rate, pitch, prange, seed)
        lead = int(round(lead_s * sr))
        trail = int(round(trail_s * sr))
        padded = np.concatenate(
            [np.zeros(lead, np.int16), audio, np.zeros(trail, np.int16)]
        )
        events = [(kind, p, s + lead) for kind, p, s in events]
        segments, words = align(
            padded, sr, events, text, accent, count_phonemes=counter
        )
        rng = np.random.default_rng(render_seed)
        out.append(_render((padded, sr, segments, words), rng))
    return out


def _synth_flite_speaker(job):
    """``_synth_speaker`` for a Flite speaker. Flite begins and ends an
    utterance with a pause of its own (about 0.2 s), so the planned silences
    are shortened by the least of them (0 to 0.18 s are added)."""
    voice, f0 = job["voice"], job["f0"]
    out = []
    for text, stretch, seed, lead_s, trail_s, render_seed in job["utterances"]:
        audio, sr, events = flite.synthesize(text, voice, stretch, f0, seed)
        lead = int(round((lead_s - _LEAD_SILENCE_S[0]) * sr))
        trail = int(round((trail_s - _TRAIL_SILENCE_S[0]) * sr))
        padded = np.concatenate(
            [np.zeros(lead, np.int16), audio, np.zeros(trail, np.int16)]
        )
        events = [(kind, p, s + lead) for kind, p, s in events]
        segments, words = align(
            padded, sr, events, text, voice,
            phone_map=phones_for_flite, closure_in_stop=True,
        )  # fmt: skip
        rng = np.random.default_rng(render_seed)
        out.append(_render((padded, sr, segments, words), rng))
    return out


_WORKER_CODE = "from tools.mini_timit.corpus import _worker_main; _worker_main()"


def _run_in_fresh_process(job):
    """``_synth_speaker(job)`` run in a new Python process.

    A plain subprocess (not multiprocessing), so that nothing of the caller's
    ``__main__`` is re-imported. The job goes in on stdin, the result comes
    back pickled in a temporary file; an exception in the worker is raised
    here again.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # holds tools/ and mtkd/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    fd, result_path = tempfile.mkstemp(prefix="mini_timit_", suffix=".pkl")
    os.close(fd)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER_CODE, result_path],
            input=pickle.dumps(job),
            capture_output=True,
            env=env,
            check=False,
        )
        try:
            with open(result_path, "rb") as f:
                status, value = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            raise MiniTimitError(
                f"the synthesis process for voice {job['voice']} failed (exit status "
                f"{proc.returncode}):\n{proc.stderr.decode(errors='replace')[-3000:]}"
            ) from None
    finally:
        os.remove(result_path)
    if status != "ok":
        raise value
    return value


def _worker_main():
    """Entry point of the worker process: job on stdin, result to argv[1]."""
    job = pickle.load(sys.stdin.buffer)
    try:
        result = ("ok", _synth_speaker(job))
    except Exception as e:  # handed to the parent, which raises it
        result = ("error", e)
    with open(sys.argv[1], "wb") as f:
        pickle.dump(result, f)


def _render(raw, rng):
    """Padded eSpeak output -> (16 kHz int16 samples, segments, word spans)."""
    audio, sr, segments, words = raw
    clean = audio.astype(np.float64)
    if sr != SAMPLE_RATE:  # eSpeak's 22050 Hz; Flite's voices are at 16 kHz
        clean = _resample(clean, sr, SAMPLE_RATE)
    n = len(clean)
    ratio = SAMPLE_RATE / sr
    bounds = [0] + [int(round(s[0] * ratio)) for s in segments[1:]] + [n]
    bounds = _enforce_min_length(bounds, _MIN_SEGMENT)
    segs = [(bounds[i], bounds[i + 1], segments[i][2]) for i in range(len(segments))]
    # level, then noise at a random SNR over the whole file
    peak = float(np.max(np.abs(clean))) if n else 0.0
    x = clean * (rng.uniform(0.15, 0.45) * 32767.0 / max(peak, 1.0))
    speech = x[bounds[1] : bounds[-2]]
    power = float(np.mean(speech**2)) if len(speech) else 0.0
    snr = rng.uniform(*_SNR_DB)
    pink = bool(rng.random() < 0.5)
    x = x + _noise(rng, n, pink) * np.sqrt(power / 10.0 ** (snr / 10.0))
    samples = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return samples, segs, words


# ---------------------------------------------------------------------------
# The corpus


def _options(
    seed, preset, counts, sx_per_speaker, si_per_speaker,
    synthesiser="espeak", flite_voices=DEFAULT_FLITE_VOICES,
):  # fmt: skip
    options = {
        # The generator's name when it lived in mtkd/: kept, so that corpora
        # made before the move are still recognised and reused.
        "generator": "mtkd.mini_timit",
        "format_version": _FORMAT_VERSION,
        "seed": int(seed),
        "preset": preset,
        **counts,
        "sx_per_speaker": int(sx_per_speaker),
        "si_per_speaker": int(si_per_speaker),
    }
    # Only where they differ from the eSpeak NG corpus's: the options of the
    # corpora made before Flite (their MINI_TIMIT.json) stay what they were.
    if synthesiser != "espeak":
        options["synthesiser"] = synthesiser
        if tuple(flite_voices) != DEFAULT_FLITE_VOICES:
            options["flite_voices"] = list(flite_voices)
    return options


def corpus_synthesiser(options):
    """(synthesiser, Flite voices) recorded in a corpus's options."""
    return (
        options.get("synthesiser", "espeak"),
        tuple(options.get("flite_voices", DEFAULT_FLITE_VOICES)),
    )


def _read_marker(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _reused(stored, out, t0):
    """The summary of an existing corpus, as returned for this call."""
    return {
        **stored,
        "out_dir": str(out),
        "reused": True,
        "wall_seconds": round(time.time() - t0, 2),
    }


def _check_existing(out, options):
    """Returns the stored summary if ``out`` holds this corpus; raises if it
    holds something else; None if it does not exist."""
    if not out.exists():
        return None
    marker = _read_marker(out / MARKER_FILENAME)
    if marker is None:
        raise MiniTimitError(
            f"{out} exists but holds no complete mini TIMIT corpus (no readable "
            f"{MARKER_FILENAME}); delete it or pick another folder"
        )
    if marker.get("options") != options:
        raise MiniTimitError(
            f"{out} holds a mini TIMIT corpus made with other options "
            f"({marker.get('options')}, asked: {options}); delete it or pick "
            "another folder"
        )
    return marker.get("summary")


def existing_corpus(
    out_dir,
    seed=1234,
    preset="demo",
    *,
    train_speakers=None,
    dev_speakers=None,
    test_speakers=None,
    sx_per_speaker=5,
    si_per_speaker=3,
    synthesiser=None,
    flite_voices=None,
):
    """The stored summary of the corpus in ``out_dir`` if ``make_mini_timit``
    made it with these options; None if ``out_dir`` does not exist.

    Raises MiniTimitError if ``out_dir`` holds an incomplete corpus or one
    made with other options (another preset, seed, speaker count or
    synthesiser).
    """
    counts = _resolve_counts(preset, train_speakers, dev_speakers, test_speakers)
    synthesiser, voices = resolve_synthesiser(preset, synthesiser, flite_voices)
    options = _options(
        seed, preset, counts, sx_per_speaker, si_per_speaker, synthesiser, voices
    )
    return _check_existing(Path(out_dir), options)


def make_mini_timit(
    out_dir,
    seed=1234,
    preset="demo",
    *,
    train_speakers=None,
    dev_speakers=None,
    test_speakers=None,
    sx_per_speaker=5,
    si_per_speaker=3,
    num_workers=None,
    synthesiser=None,
    flite_voices=None,
):
    """Writes a mini corpus in TIMIT's layout, spoken by eSpeak NG or Flite.

    Arguments
    ---------
    out_dir : str or path
        The corpus folder to create (it will hold ``TRAIN`` and ``TEST``). If
        it already holds a corpus made with the same options, nothing is done.
    seed : int
        Everything (speakers, sentences, voices, noise) follows from it; the
        same seed and options give the same bytes.
    preset : str
        ``"tiny"`` (6 train, 2 dev, 2 core-test speakers: 48/16/16 usable
        utterances), ``"demo"`` (48/4/4 speakers: 384/32/32) or
        ``"demo_core"`` (48/16/24 speakers: 384/128/192, TIMIT's whole core
        test set; run_demo.py's corpus); ``"tiny_mixed"`` and
        ``"demo_core_mixed"``: the same, spoken by both synthesisers.
    train_speakers, dev_speakers, test_speakers : int or None
        Override the preset's number of speakers.
    sx_per_speaker, si_per_speaker : int
        SX and SI sentences per speaker (TIMIT: 5 and 3), besides SA1 and SA2.
    num_workers : int or None
        Processes synthesising speakers in parallel (default: CPU count, at most
        8). Does not change the output.
    synthesiser : str or None
        ``"espeak"`` (eSpeak NG), ``"flite"`` (Flite) or ``"both"`` (half the
        speakers of every split and sex each); None: the preset's (``both``
        for a ``_mixed`` preset), else eSpeak NG. Flite needs the Debian
        package ``flite``.
    flite_voices : list of str or None
        The Flite voices speakers are given (of awb, kal16, rms, slt; default
        all four).

    Returns
    -------
    dict
        The summary, also stored in ``out_dir/MINI_TIMIT.json``::

            {"out_dir": ..., "options": {...}, "reused": False,
             "folders": {"TRAIN": {"speakers", "utterances", "seconds"},
                         "TEST": {...}},
             "splits": {"train"|"dev"|"test": {"speakers", "utterances",
                                               "seconds"}},   # SA excluded
             "speakers": {"TRAIN": [...], "TEST": [...]},  # with their
                 # "synthesiser" and "voice"
             "synthesisers": {"espeak"|"flite": {role: speakers}},
             "total_utterances", "total_seconds", "total_hours",
             "phones_61": {symbol: count}, "phones_39_seen", "phones_39_missing",
             "wall_seconds"}

    Raises
    ------
    MiniTimitError
        If ``out_dir`` exists with another or an incomplete corpus, or the
        options are invalid (an unknown synthesiser or Flite voice, Flite not
        installed, a text Flite cannot phonetise): before anything is written.
    """
    t0 = time.time()
    out = Path(out_dir)
    counts = _resolve_counts(preset, train_speakers, dev_speakers, test_speakers)
    synthesiser, voices = resolve_synthesiser(preset, synthesiser, flite_voices)
    if sx_per_speaker < 1 or si_per_speaker < 0:
        raise MiniTimitError("sx_per_speaker must be >= 1 and si_per_speaker >= 0")
    options = _options(
        seed, preset, counts, sx_per_speaker, si_per_speaker, synthesiser, voices
    )
    stored = _check_existing(out, options)
    if stored is not None:
        logger.info("%s already holds this mini TIMIT corpus; reusing it", out)
        return _reused(stored, out, t0)

    speakers = _plan(seed, counts, sx_per_speaker, si_per_speaker)
    _assign_voices(speakers, seed, synthesiser, voices, _CORPUS_VOICE_STREAMS)
    _check_flite(speakers)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        summary = _build(tmp, speakers, seed, num_workers)
        summary["options"] = options
        summary["out_dir"] = str(out)
        summary["wall_seconds"] = round(time.time() - t0, 2)
        summary["reused"] = False
        with open(tmp / MARKER_FILENAME, "w", encoding="utf-8") as f:
            json.dump({"options": options, "summary": summary}, f, indent=2)
            f.write("\n")
        try:
            os.rename(tmp, out)
        except OSError:
            # Someone else finished the same folder meanwhile?
            stored = _check_existing(out, options)
            if stored is None:
                raise
            return _reused(stored, out, t0)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "mini TIMIT written to %s: %d utterances, %.2f h, %.1f s",
        out,
        summary["total_utterances"],
        summary["total_hours"],
        summary["wall_seconds"],
    )
    return summary


def _build(root, speakers, seed, num_workers, stream=3, first=0):
    """Synthesises and writes every speaker under ``root``; returns a summary.

    ``stream``: the numpy stream of the noise and levels (``[seed, stream, i,
    j]`` for utterance j of speaker i), so that another set of speakers made
    from the same seed (the pool) draws its own numbers. ``first``: the
    number i of ``speakers[0]`` (a pool grown by more speakers draws the
    numbers the new speakers would have drawn in one build)."""
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    jobs = [
        _speaker_job(s, i, seed, stream) for i, s in enumerate(speakers, start=first)
    ]
    # In the order the speakers come: TRAIN, TEST (train, dev, test) for the
    # corpus, POOL (pool) for the pool.
    folders = {
        name: {"speakers": 0, "utterances": 0, "seconds": 0.0}
        for name in dict.fromkeys(s.folder for s in speakers)
    }
    splits = {
        role: {"speakers": 0, "utterances": 0, "seconds": 0.0}
        for role in dict.fromkeys(s.role for s in speakers)
    }
    phone_counts = dict.fromkeys(TIMIT_61_PHONES, 0)
    with concurrent.futures.ThreadPoolExecutor(max(1, int(num_workers))) as pool:
        results = pool.map(_run_in_fresh_process, jobs)
        for spk, rendered in zip(speakers, results, strict=True):
            spk_dir = root / spk.folder / spk.dr / spk.spk_id
            spk_dir.mkdir(parents=True)
            for utt, (samples, segs, words) in zip(
                spk.utterances, rendered, strict=True
            ):
                _write_utterance(spk_dir, spk, utt, samples, segs, words)
                seconds = len(samples) / SAMPLE_RATE
                folders[spk.folder]["utterances"] += 1
                folders[spk.folder]["seconds"] += seconds
                if not utt.stem.startswith("SA"):
                    splits[spk.role]["utterances"] += 1
                    splits[spk.role]["seconds"] += seconds
                for seg in segs:
                    phone_counts[seg[2]] += 1
            folders[spk.folder]["speakers"] += 1
            splits[spk.role]["speakers"] += 1
            logger.info(
                "%s/%s/%s (%s, %s %s) done",
                spk.folder,
                spk.dr,
                spk.spk_id,
                spk.role,
                SYNTHESISERS[spk.synthesiser],
                spk.voice,
            )
    for d in (*folders.values(), *splits.values()):
        d["seconds"] = round(d["seconds"], 2)
    total_seconds = sum(d["seconds"] for d in folders.values())
    seen39 = {FOLD_61_39[p] for p, c in phone_counts.items() if c and FOLD_61_39[p]}
    families = {}
    for s in speakers:
        by_role = families.setdefault(s.synthesiser, dict.fromkeys(splits, 0))
        by_role[s.role] += 1
    return {
        "folders": folders,
        "splits": splits,
        "speakers": {
            name: [_speaker_summary(s) for s in speakers if s.folder == name]
            for name in folders
        },
        "synthesisers": families,
        "total_utterances": sum(d["utterances"] for d in folders.values()),
        "total_seconds": round(total_seconds, 2),
        "total_hours": round(total_seconds / 3600.0, 4),
        "phones_61": phone_counts,
        "phones_39_seen": len(seen39),
        "phones_39_missing": sorted(_PHONES_39 - seen39),
    }


def _speaker_job(spk, i, seed, stream):
    """What the synthesis process of speaker ``spk`` (``i``-th) needs."""
    utterances = [
        (
            u.text,
            u.stretch if spk.synthesiser == "flite" else u.rate,
            u.espeak_seed,
            u.lead_s,
            u.trail_s,
            [seed, stream, i, j],
        )
        for j, u in enumerate(spk.utterances)
    ]
    if spk.synthesiser == "flite":
        return {
            "synthesiser": "flite", "voice": spk.flite_voice, "f0": spk.f0,
            "utterances": utterances,
        }  # fmt: skip
    return {
        "synthesiser": "espeak", "voice": spk.voice, "accent": spk.accent,
        "pitch": spk.pitch, "pitch_range": spk.pitch_range,
        "utterances": utterances,
    }  # fmt: skip


def _speaker_summary(spk):
    """A speaker's entry in MINI_TIMIT.json: ``synthesiser`` (espeak or flite,
    its voice family) and ``voice`` (``en-us+f2``, ``slt``) say who speaks."""
    entry = {"id": spk.spk_id, "dr": spk.dr, "role": spk.role}
    entry["synthesiser"] = spk.synthesiser
    entry["voice"] = spk.voice
    if spk.synthesiser == "flite":
        entry.update(f0=spk.f0, stretch=spk.stretch)
    else:
        entry.update(accent=spk.accent, variant=spk.variant)
    return entry


def _write_utterance(spk_dir, spk, utt, samples, segs, words):
    n = len(samples)
    utt_id = f"{spk.spk_id[1:].lower()}_{utt.stem.lower()}"
    write_sphere(spk_dir / f"{utt.stem}.WAV", samples, utt_id)
    with open(spk_dir / f"{utt.stem}.PHN", "w", encoding="ascii", newline="\n") as f:
        for start, end, sym in segs:
            f.write(f"{start} {end} {sym}\n")
    with open(spk_dir / f"{utt.stem}.WRD", "w", encoding="ascii", newline="\n") as f:
        for word, (first, last) in zip(sentence_words(utt.text), words, strict=True):
            f.write(f"{segs[first][0]} {segs[last][1]} {word}\n")
    with open(spk_dir / f"{utt.stem}.TXT", "w", encoding="ascii", newline="\n") as f:
        f.write(f"0 {n} {utt.text}\n")
