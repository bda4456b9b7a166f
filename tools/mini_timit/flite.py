"""Flite (CMU's Festival-lite) through ctypes: speech with phone segments.

The second synthesiser of the mini corpus. Flite's voices are built from
recordings of real speakers (CMU ARCTIC: awb, rms, slt; kal16 is a diphone
voice), so their speech differs from eSpeak NG's formant synthesis in ways a
recogniser notices. The library comes with the Debian package ``flite``
(``libflite1``); this module loads it with ctypes, synthesises a text with one
voice and reads the utterance Flite built on the way: its ``Segment`` relation
(each phone with its end time) and, through ``SylStructure`` and ``Token``,
which written word each phone belongs to. Nothing is parsed from printed
output.

Speaker variation: ``duration_stretch`` (every voice) scales the durations,
``int_f0_target_mean`` (Hz) sets the mean pitch of awb, slt and kal16; rms
takes its pitch from its model and ignores it (measured: the same bytes at 90
and 220 Hz), so an rms speaker varies in rate only.

Determinism: Flite's voices draw from the C library's ``rand()``, whose state
carries from one utterance to the next; ``synthesize`` seeds it (``srand``)
before every utterance, so an utterance depends on its own arguments only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading

import numpy as np

from tools.mini_timit.errors import MiniTimitError
from tools.mini_timit.sentences import _WORD_RE

# The voices a corpus may use: Flite's general-purpose 16 kHz English voices
# (``flite -lv`` also lists kal, 8 kHz, and awb_time, which only says the
# time), with the sex of the speaker behind each.
FLITE_VOICES = {"awb": "M", "kal16": "M", "rms": "M", "slt": "F"}
# Voices whose mean pitch follows int_f0_target_mean.
F0_VOICES = frozenset({"awb", "kal16", "slt"})
INSTALL_COMMAND = "apt-get install -y flite"
INSTALL_HINT = (
    "Flite is the Debian/Ubuntu package 'flite' (with its library libflite1): "
    f"install it with `sudo {INSTALL_COMMAND}`"
)

# Feature names are kept alive here: Flite stores the pointer, not a copy.
_DURATION_STRETCH = b"duration_stretch"
_F0_MEAN = b"int_f0_target_mean"
_WORD_TOKEN_PATH = b"R:SylStructure.parent.parent.R:Token.parent"
_NAME, _END = b"name", b"end"
_SEGMENT, _TOKEN = b"Segment", b"Token"

# Characters a text may hold: ASCII letters and apostrophes in words, spaces
# and sentence punctuation between them.
_ALLOWED_TEXT = re.compile(r"[A-Za-z' .,;:?!\-\"()]*")


class _Wave(ctypes.Structure):
    """``cst_wave`` of cst_wave.h."""

    _fields_ = [
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    ]


class _Voice(ctypes.Structure):
    """``cst_voice`` of cst_voice.h (its first fields)."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("features", ctypes.c_void_p),
        ("ffunctions", ctypes.c_void_p),
        ("utt_init", ctypes.c_void_p),
    ]


def _voice_library(voice):
    return f"flite_cmu_us_{voice}"


def flite_missing(voices=tuple(FLITE_VOICES)):
    """None when Flite and these voices can be loaded, else why not (a
    sentence naming the package and the command that installs it)."""
    for name in ("flite", *(_voice_library(v) for v in voices)):
        if ctypes.util.find_library(name) is None:
            return f"the library lib{name}.so is not installed. {INSTALL_HINT}"
    return None


def check_voices(voices, where="flite_voices"):
    """Raises MiniTimitError unless every name is one of ``FLITE_VOICES``."""
    voices = list(voices)
    if not voices:
        raise MiniTimitError(
            f"{where}: no voice given; use some of {', '.join(sorted(FLITE_VOICES))}"
        )
    unknown = [v for v in voices if v not in FLITE_VOICES]
    if unknown:
        raise MiniTimitError(
            f"{where}: Flite has no voice {', '.join(map(repr, unknown))}; its "
            f"voices here are {', '.join(sorted(FLITE_VOICES))} (awb, rms, kal16: "
            "male; slt: female)"
        )


def check_text(text):
    """Raises MiniTimitError if Flite cannot phonetise ``text`` into the words
    a .WRD file holds: plain ASCII words (letters and apostrophes) separated
    by spaces and punctuation. Flite reads digits as number words and spells
    or drops other characters, so its phones would not be those words'."""
    if not isinstance(text, str) or not _WORD_RE.search(text):
        raise MiniTimitError(
            f"Flite cannot phonetise {text!r}: it holds no word (letters)"
        )
    bad = sorted(set(_ALLOWED_TEXT.sub("", text)))
    if bad:
        raise MiniTimitError(
            f"Flite cannot phonetise {text!r}: {''.join(bad)!r} are not letters, "
            "apostrophes or punctuation (digits and non-ASCII characters are read "
            "or dropped in ways the .WRD words cannot follow); write the text in "
            "plain English words"
        )
    for token in text.split():
        if len(_WORD_RE.findall(token)) != 1:
            raise MiniTimitError(
                f"Flite cannot phonetise {text!r}: {token!r} is not one word "
                "(Flite reads a token between spaces as one word); put a space "
                "between its words"
            )


class _Flite:
    """The process's Flite library and its registered voices."""

    def __init__(self):
        reason = flite_missing(())
        if reason:
            raise MiniTimitError(f"Flite is needed for a Flite corpus: {reason}")
        lib = ctypes.CDLL(ctypes.util.find_library("flite"), mode=ctypes.RTLD_GLOBAL)
        ptr = ctypes.c_void_p
        signatures = {
            "flite_init": ([], ctypes.c_int),
            "flite_synth_text": ([ctypes.c_char_p, ctypes.POINTER(_Voice)], ptr),
            "flite_feat_set_float": ([ptr, ctypes.c_char_p, ctypes.c_float], None),
            "flite_feat_remove": ([ptr, ctypes.c_char_p], ctypes.c_int),
            "flite_path_to_item": ([ptr, ctypes.c_char_p], ptr),
            "utt_relation": ([ptr, ctypes.c_char_p], ptr),
            "utt_wave": ([ptr], ctypes.POINTER(_Wave)),
            "relation_head": ([ptr], ptr),
            "item_next": ([ptr], ptr),
            "item_feat_string": ([ptr, ctypes.c_char_p], ctypes.c_char_p),
            "item_feat_float": ([ptr, ctypes.c_char_p], ctypes.c_float),
            "delete_utterance": ([ptr], None),
        }
        for name, (args, result) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = args, result
        lib.flite_init()
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._srand = libc.srand
        self._srand.argtypes, self._srand.restype = [ctypes.c_uint], None
        self.lib = lib
        self._voices = {}
        self._libraries = []  # the voices' libraries stay loaded
        self.lock = threading.Lock()

    def voice(self, name):
        if name not in self._voices:
            check_voices([name], "voice")
            reason = flite_missing([name])
            if reason:
                raise MiniTimitError(f"Flite voice {name!r}: {reason}")
            library = ctypes.CDLL(ctypes.util.find_library(_voice_library(name)))
            register = getattr(library, f"register_cmu_us_{name}")
            register.argtypes, register.restype = (
                [ctypes.c_char_p],
                ctypes.POINTER(_Voice),
            )
            voice = register(None)
            if not voice:
                raise MiniTimitError(f"Flite could not load its voice {name!r}")
            self._libraries.append(library)
            self._voices[name] = voice
        return self._voices[name]

    def _items(self, utt, relation):
        item = self.lib.relation_head(self.lib.utt_relation(utt, relation))
        while item:
            yield item
            item = self.lib.item_next(item)

    def synth(self, text, voice, stretch, f0, seed):
        """(int16 audio, sample rate, [(phone, end sample, token index or
        None)], number of tokens) for ``text`` said by ``voice``."""
        lib = self.lib
        with self.lock:
            vox = self.voice(voice)
            features = vox.contents.features
            lib.flite_feat_set_float(features, _DURATION_STRETCH, float(stretch))
            if f0 is None:
                lib.flite_feat_remove(features, _F0_MEAN)
            else:
                lib.flite_feat_set_float(features, _F0_MEAN, float(f0))
            self._srand(int(seed) % 2**32)
            utt = lib.flite_synth_text(text.encode("ascii"), vox)
            if not utt:
                raise MiniTimitError(f"Flite failed on {text!r} ({voice})")
            try:
                wave = lib.utt_wave(utt)
                if not wave:
                    raise MiniTimitError(f"Flite made no audio for {text!r} ({voice})")
                wave = wave.contents
                audio = np.ctypeslib.as_array(
                    wave.samples, shape=(wave.num_samples * wave.num_channels,)
                ).copy()
                sample_rate = int(wave.sample_rate)
                tokens = {t: i for i, t in enumerate(self._items(utt, _TOKEN))}
                segments = []
                for seg in self._items(utt, _SEGMENT):
                    phone = lib.item_feat_string(seg, _NAME).decode("ascii")
                    end = int(round(lib.item_feat_float(seg, _END) * sample_rate))
                    token = lib.flite_path_to_item(seg, _WORD_TOKEN_PATH)
                    segments.append((phone, end, tokens.get(token)))
            finally:
                lib.delete_utterance(utt)
        return audio.astype(np.int16), sample_rate, segments, len(tokens)


_flite = None
_flite_lock = threading.Lock()


def _get_flite():
    global _flite
    with _flite_lock:
        if _flite is None:
            _flite = _Flite()
        return _flite


def synthesize(text, voice="slt", stretch=1.0, f0=None, seed=0):
    """Speaks ``text`` with a Flite voice; returns its audio and events.

    Arguments
    ---------
    text : str
        Plain English words (``check_text``).
    voice : str
        One of ``FLITE_VOICES``.
    stretch : float
        Flite's ``duration_stretch``: above 1 is slower.
    f0 : float or None
        Mean pitch in Hz (``int_f0_target_mean``); None keeps the voice's own.
        rms ignores it.
    seed : int
        The C library's random seed, set before the utterance.

    Returns
    -------
    audio : numpy.ndarray
        int16 samples at ``sample_rate``.
    sample_rate : int
        The voice's rate (16000 Hz for every voice of ``FLITE_VOICES``).
    events : list of tuple
        As eSpeak NG's (``tools.mini_timit.espeak.synthesize``), for ``align``:
        ``("word", text_position, sample)`` before the first phone of each
        word (1-based character position of the word in ``text``), and
        ``("phoneme", phone, sample)`` at each phone's start, Flite's phone
        names (CMU's set, ``pau`` for silence).

    Raises
    ------
    MiniTimitError
        Flite not installed, an unknown voice, a text it cannot phonetise.
    """
    check_text(text)
    check_voices([voice], "voice")
    engine = _get_flite()
    audio, sample_rate, segments, n_tokens = engine.synth(
        text, voice, stretch, f0, seed
    )
    spans = [m.start() for m in _WORD_RE.finditer(text)]
    if n_tokens != len(spans):
        raise MiniTimitError(
            f"Flite read {n_tokens} words in {text!r} but the text has "
            f"{len(spans)}: Flite cannot phonetise it word by word"
        )
    events = []
    start, last_token = 0, None
    for phone, end, token in segments:
        end = min(max(end, start), len(audio))
        if token is not None and token != last_token:
            events.append(("word", spans[token] + 1, start))
            last_token = token
        events.append(("phoneme", phone, start))
        start = end
    return audio, sample_rate, events
