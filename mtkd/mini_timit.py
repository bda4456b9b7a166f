"""A mini corpus in TIMIT's exact layout, spoken by eSpeak NG.

The recipe's tests and demo must run without the licensed TIMIT corpus (LDC93S1).
``make_mini_timit(out_dir)`` writes a small corpus that the TIMIT preparation code
reads unchanged: ``TRAIN``/``TEST`` folders, dialect regions ``DR1``..``DR8``,
speaker folders such as ``FABC0``, and per utterance a 16 kHz NIST SPHERE
``.WAV`` with its ``.PHN``, ``.WRD`` and ``.TXT`` beside it (``SA1``, ``SA2``, 5
``SX<n>`` and 3 ``SI<n>`` per speaker, as in TIMIT).

Speech
    eSpeak NG (the ``espeakng-loader`` wheel ships the library and its data)
    driven through ctypes in synchronous mode with phoneme events, so the
    ``.PHN`` boundaries are where eSpeak really put each phoneme. Each dialect
    region is one of eSpeak's English accents (``DIALECT_ACCENTS``); a speaker
    is an accent with a voice variant (``+f1``.. for ``F`` speakers,
    ``+m1``.. for ``M``) and its own pitch, pitch range and rate, and every
    utterance gets a mildly different rate and a white or pink noise at a
    random SNR of 15-30 dB.
Labels
    eSpeak's phoneme mnemonics are mapped to TIMIT's 61 symbols
    (``phones_for_mnemonic``): stress marks are stripped, each accent's own
    realisation is followed where it differs (r-coloured vowels in en-us, the
    fronted ``ux`` of Scottish English, ...), stops are written with their
    closures (``tcl t``; the closure is the silence eSpeak puts before the burst
    when there is one, else 60 % of the stop), pauses between phrases are
    ``pau`` and the leading and trailing silences ``h#``. A mnemonic the table
    does not know raises ``UnmappedPhonemeError``: no phone is ever dropped.
Determinism
    The corpus is a function of ``seed`` and the options only: eSpeak keeps
    state from one utterance to the next (its pitch-cycle phase), so every
    speaker is synthesised in a fresh process, with eSpeak's random seed set per
    utterance; noise and all choices come from numpy generators seeded by
    ``seed``. Same seed, same bytes.

``make_mini_timit`` builds in ``OUT.tmp-<pid>`` and renames it to ``OUT`` when
complete; the options and a summary are kept in ``OUT/MINI_TIMIT.json`` (TIMIT
tools ignore extra top-level files), and a later call with the same options
returns at once.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from timit_prepare import DEV_SPEAKERS as _DEV_SPEAKERS
from timit_prepare import (
    PHONE_MAP_61_39,
    PHONE_SETS,
    TEST_SPEAKERS,
    TIMIT_61_PHONES,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CORE_TEST_SPEAKERS",
    "DEV_SPEAKERS",
    "DIALECT_ACCENTS",
    "FOLD_61_39",
    "MARKER_FILENAME",
    "PRESETS",
    "SA_SENTENCES",
    "SAMPLE_RATE",
    "TIMIT_61_PHONES",
    "MiniTimitError",
    "SentenceGenerator",
    "UnmappedPhonemeError",
    "existing_corpus",
    "make_mini_timit",
    "phones_for_mnemonic",
    "read_sphere",
    "synthesize",
    "write_sphere",
]

SAMPLE_RATE = 16000
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
PRESETS = {
    "tiny": {"train_speakers": 6, "dev_speakers": 2, "test_speakers": 2},
    "demo": {"train_speakers": 48, "dev_speakers": 4, "test_speakers": 4},
    "demo_core": {"train_speakers": 48, "dev_speakers": 16, "test_speakers": 24},
}

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
_CLOSURES = {
    "b": "bcl",
    "d": "dcl",
    "g": "gcl",
    "p": "pcl",
    "t": "tcl",
    "k": "kcl",
    "ch": "tcl",
    "jh": "dcl",
}
_MIN_SEGMENT = 32  # samples at 16 kHz (2 ms): no segment is shorter


class MiniTimitError(RuntimeError):
    """Raised when the mini corpus cannot be made; says what to do."""


class UnmappedPhonemeError(MiniTimitError, KeyError):
    """An eSpeak phoneme mnemonic has no TIMIT counterpart in the table."""

    def __init__(self, mnemonic, accent):
        self.mnemonic = mnemonic
        self.accent = accent
        super().__init__(
            f"eSpeak phoneme mnemonic {mnemonic!r} (accent {accent}) has no TIMIT "
            "counterpart; add it to mtkd.mini_timit._MNEMONICS (or to the "
            "accent's entry of _ACCENT_MNEMONICS)"
        )

    def __str__(self):  # KeyError would quote the message
        return self.args[0]

    def __reduce__(self):  # picklable (it crosses from worker processes)
        return (type(self), (self.mnemonic, self.accent))


# ---------------------------------------------------------------------------
# eSpeak mnemonics -> TIMIT symbols

# What eSpeak's English phoneme tables produce for the generator's sentences,
# mapped to the nearest TIMIT symbols (a tuple: some mnemonics are two phones).
_MNEMONICS = {
    # vowels
    "a": ("ae",),
    "a/": ("ae",),
    "aa": ("ae",),
    "a#": ("ax",),
    "A:": ("aa",),
    "A@": ("aa",),
    "0": ("aa",),
    "O": ("ao",),
    "O:": ("ao",),
    "O2": ("ao",),
    "O@": ("ao",),
    "o@": ("ao",),
    "V": ("ah",),
    "@": ("ax",),
    "@2": ("ax",),
    "@5": ("ax",),
    "3": ("ax",),
    "3:": ("er",),
    "IR": ("er",),
    "VR": ("er",),
    "@L": ("el",),
    "E": ("eh",),
    "e@": ("eh", "ax"),
    "eI": ("ey",),
    "I": ("ih",),
    "I2": ("ih",),
    "I#": ("ix",),
    "i": ("iy",),
    "i:": ("iy",),
    "i@": ("iy", "ax"),
    "i@3": ("ih", "ax"),
    "U": ("uh",),
    "U@": ("uh", "ax"),
    "u:": ("uw",),
    "aI": ("ay",),
    "aI2": ("ay",),
    "aI@": ("ay", "ax"),
    "aI3": ("ay", "axr"),
    "aU": ("aw",),
    "aU@": ("aw", "ax"),
    "oU": ("ow",),
    "OI": ("oy",),
    # consonants
    "p": ("p",),
    "b": ("b",),
    "t": ("t",),
    "t2": ("t",),
    "t[": ("t",),
    "d": ("d",),
    "d[": ("d",),
    "t#": ("dx",),
    "d#": ("dx",),
    "k": ("k",),
    "g": ("g",),
    "?": ("q",),
    "tS": ("ch",),
    "dZ": ("jh",),
    "f": ("f",),
    "v": ("v",),
    "T": ("th",),
    "D": ("dh",),
    "s": ("s",),
    "z": ("z",),
    "S": ("sh",),
    "Z": ("zh",),
    "h": ("hh",),
    "x": ("hh",),
    "m": ("m",),
    "n": ("n",),
    "N": ("ng",),
    "m-": ("em",),
    "n-": ("en",),
    "l": ("l",),
    "l/": ("l",),
    "r": ("r",),
    "r-": ("r",),
    "w": ("w",),
    "w#": ("w",),
    "j": ("y",),
    ";": ("y",),  # the glide eSpeak inserts after i before a vowel
}

# Where an accent realises a phoneme differently (eSpeak's IPA output for the
# accent), the nearest TIMIT symbols for that realisation.
_ACCENT_MNEMONICS = {
    "en-us": {
        "A@": ("aa", "r"),
        "e@": ("eh", "r"),
        "O@": ("ao", "r"),
        "o@": ("ao", "r"),
        "U@": ("uh", "r"),
        "i@3": ("ih", "r"),
        "3": ("axr",),
    },
    "en-gb-x-rp": {"aa": ("aa",), "U@": ("ao",), "i": ("ih",)},
    "en-gb-scotland": {
        # Scottish English is rhotic: eSpeak writes the r as its own phoneme.
        "e@": ("eh",),
        "i@3": ("ih",),
        "o@": ("ow",),
        "U": ("ux",),
        "u:": ("ux",),
        "U@": ("ux", "r"),
        "i": ("ih",),
        "3:": ("eh",),
    },
    "en-gb-x-gbclan": {"V": ("uh",)},
    "en-gb-x-gbcwmd": {
        "V": ("uh",),
        "aI": ("oy",),
        "i:": ("ey",),
        "u:": ("ow",),
        "e@": ("er",),
    },
    "en-029": {"A@": ("aa",), "O@": ("ao",), "o@": ("ow",)},
    "en-us-nyc": {},
    "en": {},
}

_STRESS_MARKS = "'\",%=!"


def _is_pause(mnemonic):
    return mnemonic.startswith("_") and mnemonic != "_^_"


def phones_for_mnemonic(mnemonic: str, accent: str) -> tuple[str, ...]:
    """Returns the TIMIT symbols for one eSpeak phoneme mnemonic.

    Stress marks (``'``, ``,`` ...) are stripped; a trailing length mark ``:``
    is dropped when the mnemonic with it is not in the table. Pauses (``_``,
    ``_:``, ``_!`` ...) are ``("pau",)``; the language switch marker ``_^_`` is
    no phone at all (``()``).

    Arguments
    ---------
    mnemonic : str
        As eSpeak reports it in a phoneme event, e.g. ``"'A@"``.
    accent : str
        The eSpeak voice (accent) that produced it, e.g. ``"en-us"``.

    Returns
    -------
    tuple of str
        One or two TIMIT symbols.

    Raises
    ------
    UnmappedPhonemeError
        When the mnemonic is not in the table.

    Example
    -------
    >>> phones_for_mnemonic("'A@", "en-us")
    ('aa', 'r')
    >>> phones_for_mnemonic("'A@", "en")
    ('aa',)
    """
    if mnemonic == "_^_":
        return ()
    if _is_pause(mnemonic):
        return ("pau",)
    name = mnemonic.lstrip(_STRESS_MARKS)
    table = _ACCENT_MNEMONICS.get(accent, {})
    for key in (name, name.rstrip(":")):
        if key in table:
            return table[key]
        if key in _MNEMONICS:
            return _MNEMONICS[key]
    raise UnmappedPhonemeError(mnemonic, accent)


# ---------------------------------------------------------------------------
# Sentences

_NOUNS = """
apple arm artist baby badge bag ball balloon banana bank barn basket bath beach bean
bear bed bell belt bench berry bicycle bird blanket boat book boot bottle boy branch
bread bridge brother brush bubble bucket butter button cabin cake camel candle canoe
captain car carpet castle cat chair cheese cherry chicken child chimney church circle
city cloud clown coat coin collar cook cottage cow crayon crown cup curtain daughter
desk diamond dinner doctor dog doll dolphin donkey door dragon drawer dream dress drum
duck eagle engine envelope farmer feather fence finger fire fish flag flower forest
fox frog garage garden ghost giraffe girl glove goat guitar hammer hat hedge helmet
hill horse house island jacket jar jelly jewel journey judge kettle key king kitchen
kite knife ladder lamp lemon letter library lion lizard machine map measure meadow
melon mirror monkey moon mother mountain mouse mushroom needle nest newspaper noise
nurse ocean office onion orange owl oyster painter palace pencil penguin pepper piano
picture pillow pilot pirate pitcher planet plate pocket pony potato puppy puzzle queen
rabbit rainbow river robot rocket ruler sailor salad sandwich scarf school shadow sheep
shell ship shoe shovel singer sister soldier spider spoon squirrel station statue stone
student sugar suitcase sweater table teacher tiger toaster tomato tower toy tractor
treasure tree truck tunnel turtle umbrella uncle valley vase village violin voice wagon
wallet watch whale window wizard wolf worker yacht zebra
""".split()

_PLURALS = {
    "child": "children",
    "mouse": "mice",
    "sheep": "sheep",
    "fish": "fish",
    "knife": "knives",
    "wolf": "wolves",
    "scarf": "scarves",
    "potato": "potatoes",
    "tomato": "tomatoes",
}

# base, third person singular, past
_VERBS = (
    ("bake", "bakes", "baked"),
    ("borrow", "borrows", "borrowed"),
    ("bring", "brings", "brought"),
    ("build", "builds", "built"),
    ("buy", "buys", "bought"),
    ("carry", "carries", "carried"),
    ("catch", "catches", "caught"),
    ("change", "changes", "changed"),
    ("chase", "chases", "chased"),
    ("clean", "cleans", "cleaned"),
    ("cover", "covers", "covered"),
    ("draw", "draws", "drew"),
    ("drop", "drops", "dropped"),
    ("enjoy", "enjoys", "enjoyed"),
    ("fetch", "fetches", "fetched"),
    ("find", "finds", "found"),
    ("fix", "fixes", "fixed"),
    ("follow", "follows", "followed"),
    ("forget", "forgets", "forgot"),
    ("gather", "gathers", "gathered"),
    ("grab", "grabs", "grabbed"),
    ("guard", "guards", "guarded"),
    ("hide", "hides", "hid"),
    ("hold", "holds", "held"),
    ("hug", "hugs", "hugged"),
    ("judge", "judges", "judged"),
    ("keep", "keeps", "kept"),
    ("kick", "kicks", "kicked"),
    ("lift", "lifts", "lifted"),
    ("like", "likes", "liked"),
    ("lose", "loses", "lost"),
    ("measure", "measures", "measured"),
    ("mend", "mends", "mended"),
    ("move", "moves", "moved"),
    ("notice", "notices", "noticed"),
    ("open", "opens", "opened"),
    ("paint", "paints", "painted"),
    ("pass", "passes", "passed"),
    ("pick", "picks", "picked"),
    ("pull", "pulls", "pulled"),
    ("push", "pushes", "pushed"),
    ("reach", "reaches", "reached"),
    ("rescue", "rescues", "rescued"),
    ("ring", "rings", "rang"),
    ("sell", "sells", "sold"),
    ("send", "sends", "sent"),
    ("shake", "shakes", "shook"),
    ("share", "shares", "shared"),
    ("show", "shows", "showed"),
    ("sing", "sings", "sang"),
    ("squeeze", "squeezes", "squeezed"),
    ("steal", "steals", "stole"),
    ("take", "takes", "took"),
    ("taste", "tastes", "tasted"),
    ("teach", "teaches", "taught"),
    ("thank", "thanks", "thanked"),
    ("throw", "throws", "threw"),
    ("touch", "touches", "touched"),
    ("treasure", "treasures", "treasured"),
    ("visit", "visits", "visited"),
    ("wash", "washes", "washed"),
    ("watch", "watches", "watched"),
    ("weigh", "weighs", "weighed"),
    ("wrap", "wraps", "wrapped"),
    ("write", "writes", "wrote"),
    ("yell", "yells", "yelled"),
)

_ADJECTIVES = """
angry bitter black blue bold brave bright broken brown busy calm careful cheap
cheerful clever cold cozy crooked curious damp dark deep dirty dizzy dry dusty eager
early empty enormous fancy fast fat fierce foolish fresh friendly funny gentle giant
glad gloomy golden good gray greasy green grumpy happy heavy hollow huge hungry icy
jolly joyful large lazy little lonely loud lovely lucky muddy narrow nervous new
noisy odd oily old orange pale patient pink plain polite poor precious proud purple
quick quiet rapid rare red rich rough round royal rusty sad sandy shiny short shy
silly silver sleepy slow small smooth soft sour strange strong sturdy sunny sweet
tall thick thin tidy tiny tired ugly usual vast warm wet white wild wise wooden
yellow young
""".split()

_ADVERBS = """
quickly slowly quietly loudly gently carefully happily sadly bravely eagerly rarely
usually often proudly suddenly nearly easily calmly
""".split()

_DEGREES = "very quite rather too so".split()

_PLACES = """
garden kitchen forest harbor market station library village valley meadow garage
cellar attic museum bakery castle island orchard river beach desert jungle palace
stadium theater tunnel chapel barn bridge hallway
""".split()

_NAMES = """
Anna Ben Carla David Ella Frank George Helen Isaac Julia Kevin Laura Martin Nora Oscar
Paula Ruth Simon Thomas Vera Walter Zoe Joseph Charlotte Judy Roger Hugh Sheila Boyd
Ethan
""".split()

_NUMBERS = "two three four five six seven eight nine ten twelve".split()

# Slots: {A} article + next word, {adj} {noun} {nouns} {place} {name} {adv}
# {deg} {num} {base} {s3} {past}.
_TEMPLATES = (
    "The {adj} {noun} {past} {A}{noun}.",
    "{name} {past} {A}{adj} {noun} near the {place}.",
    "Why did the {noun} {base} the {adj} {noun}?",
    "When the {noun} {past}, the {adj} {noun} {past} {adv}.",
    "Please {base} the {noun} before {name} {s3} it.",
    "{name} and {name} {past} {num} {adj} {nouns}.",
    "Our {noun} was {deg} {adj}, but the {noun} {past} it anyway.",
    "{A}{adj} {noun} can {base} {num} {nouns}.",
    "Did {name} {base} the {noun} in the {place}?",
    "The {noun} in the {place} {past} {adv}.",
    "{name} {adv} {past} the {adj} {noun} and the {noun}.",
    "Nobody {past} the {noun} that {name} {past} yesterday.",
    "Those {adj} {nouns} were {deg} {adj} for the {noun}.",
    "If you {base} the {noun}, the {noun} will {base} {adv}.",
    "{name} thinks that {A}{noun} {s3} the {adj} {place}.",
    "Every morning the {noun} {s3} {A}{adj} {noun} to the {place}.",
    "Where did {name} {base} those {adj} {nouns}?",
    "My {noun} never {s3} {A}{noun} without {A}{adj} {noun}.",
)

_WORD_RE = re.compile(r"[A-Za-z']+")


def _plural(noun):
    if noun in _PLURALS:
        return _PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(word):
    w = word.lower()
    if w[0] in "aeiou" and not w.startswith(("use", "usu", "uni", "eu", "one")):
        return "an"
    return "a"


def sentence_words(text: str) -> list[str]:
    """The words of a sentence as TIMIT writes them in ``.WRD`` (lower case,
    punctuation but apostrophes removed)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


class SentenceGenerator:
    """Makes varied, grammatical-ish English sentences of 4-12 words.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of all choices.

    Example
    -------
    >>> gen = SentenceGenerator(np.random.default_rng(0))
    >>> 4 <= len(sentence_words(gen.sentence())) <= 12
    True
    """

    def __init__(self, rng):
        self.rng = rng

    def _pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def _fill(self, slot):
        verb = None
        if slot in ("base", "s3", "past"):
            verb = self._pick(_VERBS)
        return {
            "adj": lambda: self._pick(_ADJECTIVES),
            "noun": lambda: self._pick(_NOUNS),
            "nouns": lambda: _plural(self._pick(_NOUNS)),
            "place": lambda: self._pick(_PLACES),
            "name": lambda: self._pick(_NAMES),
            "adv": lambda: self._pick(_ADVERBS),
            "deg": lambda: self._pick(_DEGREES),
            "num": lambda: self._pick(_NUMBERS),
            "base": lambda: verb[0],
            "s3": lambda: verb[1],
            "past": lambda: verb[2],
        }[slot]()

    def sentence(self) -> str:
        """Returns one sentence, e.g. ``"The muddy goat kicked a lemon."``."""
        while True:
            template = self._pick(_TEMPLATES)
            parts = re.split(r"(\{[A-Za-z0-9]+\})", template)
            out = []
            pending_article = False
            for part in parts:
                if not (part.startswith("{") and part.endswith("}")):
                    out.append(part)
                    continue
                slot = part[1:-1]
                if slot == "A":
                    pending_article = True
                    continue
                word = self._fill(slot)
                if pending_article:
                    word = f"{_article(word)} {word}"
                    pending_article = False
                out.append(word)
            text = "".join(out)
            text = text[0].upper() + text[1:]
            if 4 <= len(sentence_words(text)) <= 12:
                return text


# ---------------------------------------------------------------------------
# eSpeak NG through ctypes

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_void_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h (40 bytes on x86-64)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index in this message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _ESpeak:
    """The process's eSpeak NG library, initialised once (it is global state)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as e:
            raise MiniTimitError(
                "the mini TIMIT corpus needs eSpeak NG from the pip package "
                "'espeakng-loader': pip install espeakng-loader"
            ) from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        data_path = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            data_path.encode(),
            _INITIALIZE_PHONEME_EVENTS,
        )
        if rate <= 0:
            raise MiniTimitError(
                f"eSpeak NG failed to initialise (data at {data_path}); reinstall "
                "espeakng-loader"
            )
        self.lib = lib
        self.sample_rate = rate
        self._chunks = []
        self._events = []
        self._callback = _SynthCallback(self._on_synth)  # keep a reference
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_synth(self, wav, n_samples, events):
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type in (_EVENT_WORD, _EVENT_PHONEME):
                payload = (
                    ev.id.string if ev.type == _EVENT_PHONEME else ev.text_position
                )
                self._events.append(
                    (ev.type, payload, int(ev.sample), int(ev.audio_position))
                )
            i += 1
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def synth(self, text, voice, rate, pitch, pitch_range, seed):
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise MiniTimitError(f"eSpeak NG has no voice {voice!r}")
            for param, value in (
                (_PARAM_RATE, rate),
                (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range),
                (_PARAM_VOLUME, 100),
            ):
                self.lib.espeak_SetParameter(param, int(value), 0)
            if self._set_seed is not None:
                self._set_seed(int(seed))
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if err != 0:
                raise MiniTimitError(f"eSpeak NG failed on {text!r} (error {err})")
            audio = (
                np.concatenate(self._chunks)
                if self._chunks
                else np.zeros(0, dtype=np.int16)
            )
            return audio.astype(np.int16), self._events

    def count_phonemes(self, word, voice):
        """Number of phonemes eSpeak gives ``word`` said alone."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise MiniTimitError(f"eSpeak NG has no voice {voice!r}")
            text = ctypes.c_char_p(word.encode("utf-8"))
            # phoneme mnemonics, '|' between phonemes
            out = self.lib.espeak_TextToPhonemes(
                ctypes.byref(text), _CHARS_UTF8, ord("|") << 8
            )
        names = (out or b"").decode("utf-8", errors="replace").replace(" ", "|")
        return sum(1 for name in names.split("|") if name.strip(_STRESS_MARKS))


_espeak = None
_espeak_lock = threading.Lock()


def _get_espeak():
    global _espeak
    with _espeak_lock:
        if _espeak is None:
            _espeak = _ESpeak()
        return _espeak


def synthesize(text, voice="en-us", rate=175, pitch=50, pitch_range=50, seed=0):
    """Speaks ``text`` with eSpeak NG; returns its raw output and events.

    Note that eSpeak keeps some state between calls in one process (the phase
    of its pitch cycles), so a repeated call may differ by a few samples.

    Arguments
    ---------
    text : str
        What to say.
    voice : str
        eSpeak voice, an accent with an optional variant (``"en-us+f2"``).
    rate, pitch, pitch_range : int
        Words per minute; base pitch and pitch range on eSpeak's 0-100 scale.
    seed : int
        eSpeak's random seed (breathy variants use random noise).

    Returns
    -------
    audio : numpy.ndarray
        int16 samples at ``sample_rate``.
    sample_rate : int
        eSpeak's rate (22050 Hz).
    phonemes : list of (str, int)
        Each phoneme mnemonic with its start sample, in order.
    words : list of (int, int)
        Each word event: 1-based character position in ``text``, start sample.
    events : list of tuple
        All word and phoneme events in order: ``("word", text_position,
        sample)`` or ``("phoneme", mnemonic, sample)``.
    """
    engine = _get_espeak()
    audio, raw = engine.synth(text, voice, rate, pitch, pitch_range, seed)
    events = _clean_events(raw, len(audio), engine.sample_rate)
    phonemes = [(p, s) for kind, p, s in events if kind == "phoneme"]
    words = [(p, s) for kind, p, s in events if kind == "word"]
    return audio, engine.sample_rate, phonemes, words, events


def _clean_events(raw, n_samples, sample_rate):
    """Decodes raw events; sample positions made monotonic and in range."""
    events = []
    last = 0
    for kind, payload, sample, audio_ms in raw:
        # The sample index is exact; audio_position (ms) is its floor. Fall
        # back on the latter should a library build not fill the former.
        if abs(sample * 1000.0 / sample_rate - audio_ms) > 2.0:
            sample = int(round(audio_ms * sample_rate / 1000.0))
        sample = min(max(sample, last), n_samples)
        last = sample
        if kind == _EVENT_PHONEME:
            name = bytes(payload).split(b"\0")[0].decode("utf-8", errors="replace")
            events.append(("phoneme", name, sample))
        else:
            events.append(("word", int(payload), sample))
    return events


# ---------------------------------------------------------------------------
# Alignment: eSpeak events -> TIMIT segments and words


def _frame_energy(audio, frame):
    x = audio.astype(np.float64)
    n = len(x) // frame
    if n == 0:
        return np.zeros(0)
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))


def _trailing_silence(audio, start, end, threshold, frame):
    """Number of samples of the silent run that ends segment [start, end)."""
    pos = end
    while pos - frame >= start:
        chunk = audio[pos - frame : pos].astype(np.float64)
        if np.sqrt(np.mean(chunk**2)) >= threshold:
            break
        pos -= frame
    return end - pos


def align(audio, sample_rate, events, text, accent, count_phonemes=None):
    """Turns eSpeak's events into TIMIT segments and word spans.

    Arguments
    ---------
    audio : numpy.ndarray
        eSpeak's int16 output.
    sample_rate : int
        Its rate.
    events : list of tuple
        ``synthesize``'s ``events``.
    text : str
        The text that was spoken.
    accent : str
        The accent of the voice (for the mnemonic table).
    count_phonemes : callable or None
        ``count_phonemes(word) -> int``, the number of phonemes of a word said
        alone; used to share out the phonemes of words that eSpeak says as one
        (its dictionary joins "in the", "for the", "that a"). None counts
        half a phoneme per letter.

    Returns
    -------
    segments : list of [int, int, str]
        ``[start, end, symbol]`` covering ``[0, len(audio))`` contiguously, at
        ``sample_rate``; edges are ``h#``, stops have their closures.
    words : list of (int, int)
        For each word of ``sentence_words(text)``, the indices of its first
        and last segment.

    Raises
    ------
    UnmappedPhonemeError
        For a mnemonic without TIMIT counterpart.
    MiniTimitError
        If a word of the text got no phoneme.
    """
    n = len(audio)
    spans = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]

    def token_at(text_position):
        pos = text_position - 1
        for i, (a, b) in enumerate(spans):
            if a <= pos < b:
                return i
        return None

    # 1. phones, and the word whose event came last before each
    phones = []  # [start, symbols, word index]
    anchor = -1  # phones before the first word event
    for kind, payload, sample in events:
        if kind == "word":
            token = token_at(payload)
            if token is not None:
                anchor = token
            continue
        symbols = phones_for_mnemonic(payload, accent)
        if symbols:
            phones.append([sample, symbols, None if symbols == ("pau",) else anchor])
    _split_merged_words(phones, [text[a:b] for a, b in spans], count_phonemes)
    # 2. segments: each phone lasts until the next; pauses merged, empty
    #    pauses dropped (a pause is a marker, not a phone)
    segs = []  # [start, end, symbol, word]
    for i, (start, symbols, w) in enumerate(phones):
        end = phones[i + 1][0] if i + 1 < len(phones) else n
        if symbols == ("pau",):
            if end <= start:
                continue
            if segs and segs[-1][2] == "pau" and segs[-1][1] == start:
                segs[-1][1] = end
                continue
        if len(symbols) == 1:
            segs.append([start, end, symbols[0], w])
        else:  # two phones in one eSpeak phoneme: 60 % / 40 %
            mid = start + int(round(0.6 * (end - start)))
            segs.append([start, mid, symbols[0], w])
            segs.append([mid, end, symbols[1], w])
    _widen_empty_phones(segs, int(0.015 * sample_rate), int(0.06 * sample_rate))
    # 3. leading/trailing silence -> h# (pauses there are part of it)
    while segs and segs[0][2] == "pau":
        segs.pop(0)
    while segs and segs[-1][2] == "pau":
        segs.pop()
    if not segs:
        raise MiniTimitError(f"eSpeak said nothing for {text!r} ({accent})")
    segs.insert(0, [0, segs[0][0], "h#", None])
    segs.append([segs[-1][1], n, "h#", None])
    # 4. closures before stops and affricates
    frame = max(1, sample_rate // 1000)
    energy = _frame_energy(audio, frame)
    loud = float(np.percentile(energy, 95)) if len(energy) else 0.0
    threshold = max(0.02 * loud, 8.0)
    min_closure = int(0.005 * sample_rate)
    out = []
    for seg in segs:
        start, end, sym, w = seg
        closure = _CLOSURES.get(sym)
        if closure is None:
            out.append(seg)
            continue
        prev = out[-1] if out else None
        cut = None
        if prev is not None and prev[2] in ("h#", "pau"):
            # carve the closure from the end of the silence before the stop
            length = min(int(0.05 * sample_rate), (prev[1] - prev[0]) // 2)
            if length >= min_closure:
                cut = prev[1] - length
        elif prev is not None and prev[2] not in _CLOSURES.values():
            # eSpeak ends the phone before a stop with the stop's silence
            silent = _trailing_silence(audio, prev[0], prev[1], threshold, frame)
            length = prev[1] - prev[0]
            keep = max(int(0.3 * length), int(0.015 * sample_rate))
            silent = min(silent, length - keep)
            if silent >= min_closure:
                cut = prev[1] - silent
        if cut is not None:
            prev[1] = cut
            out.append([cut, start, closure, w])
            out.append([start, end, sym, w])
        else:  # closure and release share the stop's own segment
            mid = start + int(round(0.6 * (end - start)))
            out.append([start, mid, closure, w])
            out.append([mid, end, sym, w])
    segs = out
    # 5. words: first and last segment of each
    words = []
    for i in range(len(spans)):
        idx = [j for j, s in enumerate(segs) if s[3] == i]
        if not idx:
            raise MiniTimitError(
                f"eSpeak said no phoneme for word {i + 1} of {text!r} "
                f"({text[spans[i][0] : spans[i][1]]!r}, accent {accent}); "
                "change the generator's vocabulary"
            )
        words.append((idx[0], idx[-1]))
    return [[s[0], s[1], s[2]] for s in segs], words


def _split_merged_words(phones, words, count_phonemes):
    """Gives each word its phones where eSpeak sent one event for several.

    ``phones[i][2]`` is the word of the last word event before phone ``i``
    (-1 before the first); words without an event of their own follow the
    word before them (or precede the first one). The phones of such a group
    are shared from its end by each word's phoneme count, at least one each.
    """
    anchors = sorted({p[2] for p in phones if p[2] is not None})
    starts = [a for a in anchors if a >= 0]
    groups = []
    first = starts[0] if starts else len(words)
    if -1 in anchors or first > 0:
        groups.append((-1, list(range(0, first))))
    for k, a in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(words)
        groups.append((a, list(range(a, end))))
    for anchor, members in groups:
        idx = [i for i, p in enumerate(phones) if p[2] == anchor]
        if not members:
            continue
        if len(members) == 1 or len(idx) < len(members):
            for i in idx:
                phones[i][2] = members[0]
            continue
        if count_phonemes is not None:
            want = [max(1, int(count_phonemes(words[m]))) for m in members]
        else:
            want = [max(1, len(words[m]) // 2) for m in members]
        # from the end: each later word takes its count, leaving >= 1 per word
        remaining = len(idx)
        share = [0] * len(members)
        for j in range(len(members) - 1, 0, -1):
            share[j] = max(1, min(want[j], remaining - j))
            remaining -= share[j]
        share[0] = remaining
        pos = 0
        for j, m in enumerate(members):
            for i in idx[pos : pos + share[j]]:
                phones[i][2] = m
            pos += share[j]


def _widen_empty_phones(segs, short, most):
    """Gives phones eSpeak made (nearly) empty a share of a neighbour.

    eSpeak sometimes starts a phoneme on the same sample as the next one
    (coda l and r, realised in the end of the vowel before). Such a phone gets
    the last third of the phone before it (at most ``most`` samples), or the
    first third of the phone after when there is none before, so that no
    phone is a few samples long. ``segs`` is ``[start, end, symbol, word]``.
    """
    for i, seg in enumerate(segs):
        if seg[2] == "pau" or seg[1] - seg[0] >= short:
            continue
        for j, at_end in ((i - 1, True), (i + 1, False)):
            if not 0 <= j < len(segs) or segs[j][2] == "pau":
                continue
            other = segs[j]
            take = min(most, (other[1] - other[0]) // 3)
            if other[1] - other[0] - take < short or take <= seg[1] - seg[0]:
                continue
            if at_end:
                other[1] -= take - (seg[1] - seg[0])
                seg[0] = other[1]
            else:
                other[0] += take - (seg[1] - seg[0])
                seg[1] = other[0]
            break


def _enforce_min_length(bounds, minimum):
    """Moves boundaries so that every segment has at least ``minimum`` samples."""
    b = list(bounds)
    total = b[-1]
    if total < minimum * (len(b) - 1):
        raise MiniTimitError("utterance too short for its phone segments")
    for i in range(1, len(b) - 1):
        b[i] = max(b[i], b[i - 1] + minimum)
    for i in range(len(b) - 2, 0, -1):
        b[i] = min(b[i], b[i + 1] - minimum)
    return b


# ---------------------------------------------------------------------------
# Audio: resampling, noise, NIST SPHERE


_kernels = {}


def _resample_kernel(orig_sr, new_sr, zero_crossings=24, rolloff=0.945):
    """Polyphase windowed-sinc kernel: (taps, new phases), its half width,
    and the reduced rates (up, down)."""
    g = gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    cutoff = 0.5 * rolloff * min(1.0, up / down)  # cycles per input sample
    half = int(np.ceil(zero_crossings / (2.0 * cutoff)))
    taps = np.arange(-half, down + half)
    phases = np.arange(up) * (down / up)  # input position of each output
    d = taps[None, :] - phases[:, None]
    window = np.where(np.abs(d) <= half, 0.5 * (1.0 + np.cos(np.pi * d / half)), 0)
    kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * d) * window
    return np.ascontiguousarray(kernel.T), half, up, down


def _resample(x, orig_sr, new_sr):
    """float64 signal resampled from ``orig_sr`` to ``new_sr`` (numpy only).

    A polyphase windowed-sinc filter (Hann window, 24 zero crossings a side,
    flat to 0.945 of the lower Nyquist frequency): every block of ``down``
    input samples gives ``up`` outputs, all blocks in one matrix product.
    Output length is ``ceil(len(x) * new_sr / orig_sr)``.
    """
    key = (orig_sr, new_sr)
    if key not in _kernels:
        _kernels[key] = _resample_kernel(orig_sr, new_sr)
    kernel, half, up, down = _kernels[key]
    n_out = -(-len(x) * up // down)
    if n_out == 0:
        return np.zeros(0)
    blocks = -(-n_out // up)
    width = kernel.shape[0]
    padded = np.zeros((blocks - 1) * down + width)
    padded[half : half + len(x)] = x
    step = padded.strides[0]
    view = np.lib.stride_tricks.as_strided(
        padded, (blocks, width), (step * down, step), writeable=False
    )
    return (view @ kernel).reshape(-1)[:n_out]


def _noise(rng, n, pink):
    """Unit-variance white or pink (1/f power) noise of ``n`` samples."""
    if not pink or n < 4:
        return rng.standard_normal(n)
    m = 1 << (n - 1).bit_length()  # a fast FFT size
    spectrum = np.fft.rfft(rng.standard_normal(m))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0
    pink_noise = np.fft.irfft(spectrum, m)[:n]
    return pink_noise / (np.std(pink_noise) + 1e-12)


def write_sphere(path, samples, utterance_id, sample_rate=SAMPLE_RATE):
    """Writes int16 ``samples`` as a NIST SPHERE file like LDC's TIMIT.

    The 1024-byte header holds the fields of TIMIT's own headers (``NIST_1A``,
    ``database_id -s5 TIMIT``, ..., ``sample_sig_bits -i 16``, ``end_head``),
    then come the little-endian 16-bit samples.
    """
    samples = np.asarray(samples, dtype="<i2")
    lo = int(samples.min()) if len(samples) else 0
    hi = int(samples.max()) if len(samples) else 0
    lines = [
        "NIST_1A",
        "   1024",
        "database_id -s5 TIMIT",
        "database_version -s3 1.0",
        f"utterance_id -s{len(utterance_id)} {utterance_id}",
        "channel_count -i 1",
        f"sample_count -i {len(samples)}",
        f"sample_rate -i {int(sample_rate)}",
        f"sample_min -i {lo}",
        f"sample_max -i {hi}",
        "sample_n_bytes -i 2",
        "sample_byte_format -s2 01",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    head = ("\n".join(lines) + "\n").encode("ascii")
    if len(head) > 1024:
        raise MiniTimitError(f"SPHERE header of {path} longer than 1024 bytes")
    head += b" " * (1024 - len(head))
    with open(path, "wb") as f:
        f.write(head)
        f.write(samples.tobytes())


def read_sphere(path):
    """Reads a NIST SPHERE file written by ``write_sphere`` (16-bit PCM).

    Returns
    -------
    fields : dict
        Header fields, ints for ``-i`` fields and strings otherwise.
    samples : numpy.ndarray
        int16 samples.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"NIST_1A\n"):
        raise MiniTimitError(f"{path} is not a NIST SPHERE file")
    size = int(data[8:16])
    fields = {}
    for line in data[16:size].decode("ascii").split("\n"):
        line = line.strip()
        if line == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = int(parts[2]) if parts[1] == "-i" else parts[2]
    order = "<" if fields.get("sample_byte_format", "01") == "01" else ">"
    samples = np.frombuffer(data[size:], dtype=order + "i2").astype(np.int16)
    return fields, samples


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


@dataclass
class _Utterance:
    stem: str  # "SA1", "SX47", "SI1203"
    text: str
    rate: int = 0
    espeak_seed: int = 0
    lead_s: float = 0.0  # silence before and after the speech
    trail_s: float = 0.0


def _resolve_counts(preset, train_speakers, dev_speakers, test_speakers):
    if preset not in PRESETS:
        raise MiniTimitError(
            f"preset={preset!r} is not known; use one of {', '.join(PRESETS)}"
        )
    counts = dict(PRESETS[preset])
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


def _plan(seed, counts, sx_per_speaker, si_per_speaker):
    """Speakers with their utterances, in a fixed order; all from ``seed``."""
    rng = np.random.default_rng([seed, 0])
    speakers = []
    taken = set(DEV_SPEAKERS) | set(CORE_TEST_SPEAKERS)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))

    def add(spk_id, folder, dr, role):
        sex = spk_id[0].upper()
        variants = FEMALE_VARIANTS if sex == "F" else MALE_VARIANTS
        variant = variants[int(rng.integers(len(variants)))]
        pitch = int(rng.integers(40, 80) if sex == "F" else rng.integers(20, 60))
        pitch_range = int(rng.integers(30, 90))
        rate = float(rng.uniform(140, 195))
        speakers.append(
            _Speaker(
                spk_id.upper(),
                folder,
                dr,
                role,
                sex,
                DIALECT_ACCENTS[dr],
                variant,
                pitch,
                pitch_range,
                rate,
            )
        )

    # Train speakers: the dialect regions in turn, female and male alternating
    # per round so that every region gets both.
    for i in range(counts["train_speakers"]):
        sex = "F" if (i + i // len(_DIALECTS)) % 2 == 0 else "M"
        while True:
            spk = sex + "".join(rng.choice(letters, 3)) + "0"
            if spk.lower() not in taken:
                break
        taken.add(spk.lower())
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


# ---------------------------------------------------------------------------
# Synthesis of one speaker (runs in a fresh process)


def _synth_speaker(job):
    """Synthesises, aligns and renders the utterances of one speaker.

    Run in a fresh process per speaker (``_run_in_fresh_process``) so that
    eSpeak's carried-over state is the same on every run (see the module
    doc). Each utterance is padded with the silences of its ``h#`` segments
    before it is aligned, then resampled to 16 kHz with noise added
    (``_render``).

    Returns a list of (int16 samples, segments, word spans), one per utterance.
    """
    voice, accent, pitch, prange, utterances = job
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


_WORKER_CODE = "from mtkd.mini_timit import _worker_main; _worker_main()"


def _run_in_fresh_process(job):
    """``_synth_speaker(job)`` run in a new Python process.

    A plain subprocess (not multiprocessing), so that nothing of the caller's
    ``__main__`` is re-imported. The job goes in on stdin, the result comes
    back pickled in a temporary file; an exception in the worker is raised
    here again.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # holds mtkd/
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
                f"the synthesis process for voice {job[0]} failed (exit status "
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
    clean = _resample(audio.astype(np.float64), sr, SAMPLE_RATE)
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


def _options(seed, preset, counts, sx_per_speaker, si_per_speaker):
    return {
        "generator": "mtkd.mini_timit",
        "format_version": _FORMAT_VERSION,
        "seed": int(seed),
        "preset": preset,
        **counts,
        "sx_per_speaker": int(sx_per_speaker),
        "si_per_speaker": int(si_per_speaker),
    }


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
):
    """The stored summary of the corpus in ``out_dir`` if ``make_mini_timit``
    made it with these options; None if ``out_dir`` does not exist.

    Raises MiniTimitError if ``out_dir`` holds an incomplete corpus or one
    made with other options (another preset, seed or speaker count).
    """
    counts = _resolve_counts(preset, train_speakers, dev_speakers, test_speakers)
    options = _options(seed, preset, counts, sx_per_speaker, si_per_speaker)
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
):
    """Writes a mini corpus in TIMIT's layout, spoken by eSpeak NG.

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
        test set; run_demo.py's corpus).
    train_speakers, dev_speakers, test_speakers : int or None
        Override the preset's number of speakers.
    sx_per_speaker, si_per_speaker : int
        SX and SI sentences per speaker (TIMIT: 5 and 3), besides SA1 and SA2.
    num_workers : int or None
        Processes synthesising speakers in parallel (default: CPU count, at most
        8). Does not change the output.

    Returns
    -------
    dict
        The summary, also stored in ``out_dir/MINI_TIMIT.json``::

            {"out_dir": ..., "options": {...}, "reused": False,
             "folders": {"TRAIN": {"speakers", "utterances", "seconds"},
                         "TEST": {...}},
             "splits": {"train"|"dev"|"test": {"speakers", "utterances",
                                               "seconds"}},   # SA excluded
             "speakers": {"TRAIN": [...], "TEST": [...]},
             "total_utterances", "total_seconds", "total_hours",
             "phones_61": {symbol: count}, "phones_39_seen", "phones_39_missing",
             "wall_seconds"}

    Raises
    ------
    MiniTimitError
        If ``out_dir`` exists with another or an incomplete corpus, or the
        options are invalid.
    """
    t0 = time.time()
    out = Path(out_dir)
    counts = _resolve_counts(preset, train_speakers, dev_speakers, test_speakers)
    if sx_per_speaker < 1 or si_per_speaker < 0:
        raise MiniTimitError("sx_per_speaker must be >= 1 and si_per_speaker >= 0")
    options = _options(seed, preset, counts, sx_per_speaker, si_per_speaker)
    stored = _check_existing(out, options)
    if stored is not None:
        logger.info("%s already holds this mini TIMIT corpus; reusing it", out)
        return _reused(stored, out, t0)

    speakers = _plan(seed, counts, sx_per_speaker, si_per_speaker)
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


def _build(root, speakers, seed, num_workers):
    """Synthesises and writes every speaker under ``root``; returns a summary."""
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    jobs = [
        (
            f"{s.accent}+{s.variant}",
            s.accent,
            s.pitch,
            s.pitch_range,
            [
                (u.text, u.rate, u.espeak_seed, u.lead_s, u.trail_s, [seed, 3, i, j])
                for j, u in enumerate(s.utterances)
            ],
        )
        for i, s in enumerate(speakers)
    ]
    folders = {
        name: {"speakers": 0, "utterances": 0, "seconds": 0.0}
        for name in ("TRAIN", "TEST")
    }
    splits = {
        role: {"speakers": 0, "utterances": 0, "seconds": 0.0}
        for role in ("train", "dev", "test")
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
                "%s/%s/%s (%s, %s+%s) done",
                spk.folder,
                spk.dr,
                spk.spk_id,
                spk.role,
                spk.accent,
                spk.variant,
            )
    for d in (*folders.values(), *splits.values()):
        d["seconds"] = round(d["seconds"], 2)
    total_seconds = sum(d["seconds"] for d in folders.values())
    seen39 = {FOLD_61_39[p] for p, c in phone_counts.items() if c and FOLD_61_39[p]}
    return {
        "folders": folders,
        "splits": splits,
        "speakers": {
            name: [
                {
                    "id": s.spk_id,
                    "dr": s.dr,
                    "role": s.role,
                    "accent": s.accent,
                    "variant": s.variant,
                }
                for s in speakers
                if s.folder == name
            ]
            for name in ("TRAIN", "TEST")
        },
        "total_utterances": sum(d["utterances"] for d in folders.values()),
        "total_seconds": round(total_seconds, 2),
        "total_hours": round(total_seconds / 3600.0, 4),
        "phones_61": phone_counts,
        "phones_39_seen": len(seen39),
        "phones_39_missing": sorted(_PHONES_39 - seen39),
    }


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
