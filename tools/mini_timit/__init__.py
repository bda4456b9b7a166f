"""A mini corpus in TIMIT's exact layout, spoken by eSpeak NG and/or Flite.

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
Flite (``synthesiser="flite"`` or ``"both"``)
    CMU's Festival-lite through ctypes (``flite.py``; the Debian package
    ``flite``): voices awb, kal16, rms (men) and slt (a woman), each speaker
    with its own duration stretch and, where the voice follows it, mean pitch.
    Flite's utterance gives each phone's end time and word, its CMU phones
    map one to one onto TIMIT's symbols (``phones_for_flite``), and the
    stops get their closures from the silence at the start of their segment.
    ``both`` gives half of each split's speakers (and of each sex) to Flite;
    the others are the eSpeak NG corpus's own speakers, byte for byte.
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

    errors.py     MiniTimitError, UnmappedPhonemeError, UnmappedFlitePhoneError
    phones.py     eSpeak mnemonics -> TIMIT symbols
    sentences.py  the sentence generator
    espeak.py     eSpeak NG through ctypes (``synthesize``)
    flite.py      Flite through ctypes (``synthesize``, ``check_text``)
    align.py      a synthesiser's events -> .PHN segments and .WRD words
    audio.py      resampling, noise, SPHERE writing (reading: timit_prepare)
    corpus.py     plan, one fresh process per speaker, ``make_mini_timit``
"""

from timit_prepare import read_sphere
from tools.mini_timit.align import align
from tools.mini_timit.audio import SAMPLE_RATE, write_sphere
from tools.mini_timit.corpus import (
    CORE_TEST_SPEAKERS,
    DEV_SPEAKERS,
    DIALECT_ACCENTS,
    FOLD_61_39,
    MARKER_FILENAME,
    PRESETS,
    SA_SENTENCES,
    SYNTHESISERS,
    TIMIT_61_PHONES,
    VOICE_FAMILIES,
    existing_corpus,
    make_mini_timit,
)
from tools.mini_timit.errors import MiniTimitError, UnmappedPhonemeError
from tools.mini_timit.espeak import synthesize
from tools.mini_timit.phones import phones_for_flite, phones_for_mnemonic
from tools.mini_timit.sentences import SentenceGenerator, sentence_words

__all__ = [
    "CORE_TEST_SPEAKERS",
    "DEV_SPEAKERS",
    "DIALECT_ACCENTS",
    "FOLD_61_39",
    "MARKER_FILENAME",
    "PRESETS",
    "SA_SENTENCES",
    "SAMPLE_RATE",
    "SYNTHESISERS",
    "TIMIT_61_PHONES",
    "VOICE_FAMILIES",
    "MiniTimitError",
    "SentenceGenerator",
    "UnmappedPhonemeError",
    "align",
    "existing_corpus",
    "make_mini_timit",
    "phones_for_flite",
    "phones_for_mnemonic",
    "read_sphere",
    "sentence_words",
    "synthesize",
    "write_sphere",
]
