"""eSpeak NG through ctypes: synchronous synthesis with phoneme events."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from tools.mini_timit.errors import MiniTimitError
from tools.mini_timit.phones import _STRESS_MARKS

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
