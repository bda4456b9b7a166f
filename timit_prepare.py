"""Data preparation for the TIMIT corpus (LDC93S1).

Writes three SpeechBrain JSON manifests (train / valid / test) of the form::

    {
      "FCJF0_SI1027": {
        "wav": "{data_root}/TRAIN/DR1/FCJF0/SI1027.WAV",
        "duration": 2.91,
        "spk_id": "FCJF0",
        "phn": "sil b iy sil ...",
        "wrd": "she had your dark suit ..."
      },
      ...
    }

``wav`` holds the path of the audio file relative to the corpus folder, with its
real case on disk, behind SpeechBrain's ``{data_root}`` placeholder; load a
manifest with ``DynamicItemDataset.from_json(path, replacements={"data_root":
data_folder})``.

The split is the standard one: the SA1/SA2 dialect sentences are dropped, every
speaker under ``TRAIN`` is used for training (3696 utterances), the 50 speakers of
the standard development set (``DEV_SPEAKERS``, 400 utterances) and the 24
speakers of the core test set (``TEST_SPEAKERS``, 192 utterances) are taken from
``TEST``. The other ``TEST`` speakers are not used.

Three layouts of the corpus are recognised (names are matched without regard to
case, so mixed-case copies work too):

``"ldc"``
    As shipped by the LDC: ``TRAIN/DR1/FCJF0/SI1027.WAV`` (NIST SPHERE) with
    ``.PHN``, ``.WRD`` and ``.TXT`` beside it.
``"lower"``
    The same, lower-cased: ``train/dr1/fcjf0/si1027.wav``.
``"riff_copy"``
    The widely shared copy with a RIFF ``SI1027.WAV.wav`` beside every SPHERE
    ``SI1027.WAV``. Each utterance is listed once, with the RIFF file as ``wav``.

Phone sets (``phn_set``): 61 is TIMIT's own symbols, 60 drops the glottal stop
``q``, 48 and 39 are the foldings of Lee & Hon (1989). Each symbol is folded on
its own and symbols without a counterpart (``q``) are dropped; consecutive equal
phones produced by folding (e.g. ``pcl`` + ``h#`` -> ``sil sil``) are kept as
they are, not merged, like the usual TIMIT recipes, so a phone sequence stays
aligned one-to-one with the segments of the ``.PHN`` file (less the ``q``).

Usage from the command line::

    python timit_prepare.py /path/to/TIMIT results/prepared --phn_set 39
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import soundfile

from mtkd import RecipeError

logger = logging.getLogger(__name__)

__all__ = [
    "DEV_SPEAKERS",
    "LAYOUTS",
    "OPTS_FILENAME",
    "PHONE_MAP_48_39",
    "PHONE_MAP_61_39",
    "PHONE_MAP_61_48",
    "PHONE_SETS",
    "TEST_SPEAKERS",
    "TIMIT_61_PHONES",
    "TimitPrepError",
    "fold_phones",
    "prepare_timit",
    "read_sphere",
    "read_sphere_duration",
]

# The 50 speakers of the standard development set (from TIMIT's TEST folder).
DEV_SPEAKERS = frozenset(
    """
    fadg0 faks0 fcal1 fcmh0 fdac1 fdms0 fdrw0 fedw0 fgjd0 fjem0 fjmg0 fjsj0
    fkms0 fmah0 fmml0 fnmr0 frew0 fsem0 majc0 mbdg0 mbns0 mbwm0 mcsh0 mdlf0
    mdls0 mdvc0 mers0 mgjf0 mglb0 mgwt0 mjar0 mjfc0 mjsw0 mmdb1 mmdm2 mmjr0
    mmwh0 mpdf0 mrcs0 mreb0 mrjm4 mrjr0 mroa0 mrtk0 mrws1 mtaa0 mtdt0 mteb0
    mthc0 mwjg0
    """.split()
)

# The 24 speakers of the core test set (from TIMIT's TEST folder).
TEST_SPEAKERS = frozenset(
    """
    fdhc0 felc0 fjlm0 fmgd0 fmld0 fnlp0 fpas0 fpkt0 mbpm0 mcmj0 mdab0 mgrt0
    mjdh0 mjln0 mjmp0 mklt0 mlll0 mlnt0 mnjm0 mpam0 mtas1 mtls0 mwbt0 mwew0
    """.split()
)

# TIMIT's 61 phone symbols, as they appear in the .PHN files.
TIMIT_61_PHONES = tuple(
    """
    aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er
    ey f g gcl h# hh hv ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh
    t tcl th uh uw ux v w y z zh
    """.split()
)

# Lee & Hon (1989), 61 -> 48. Symbols not listed map to themselves; None = drop.
_CHANGES_61_48 = {
    "ax-h": "ax",
    "axr": "er",
    "bcl": "vcl",
    "dcl": "vcl",
    "gcl": "vcl",
    "pcl": "cl",
    "tcl": "cl",
    "kcl": "cl",
    "em": "m",
    "eng": "ng",
    "hv": "hh",
    "nx": "n",
    "ux": "uw",
    "h#": "sil",
    "pau": "sil",
    "q": None,
}
PHONE_MAP_61_48 = {p: _CHANGES_61_48.get(p, p) for p in TIMIT_61_PHONES}

# Lee & Hon (1989), 48 -> 39 (the folding used for scoring).
_CHANGES_48_39 = {
    "ao": "aa",
    "ax": "ah",
    "el": "l",
    "en": "n",
    "ix": "ih",
    "zh": "sh",
    "cl": "sil",
    "vcl": "sil",
    "epi": "sil",
}
PHONE_MAP_48_39 = {
    p: _CHANGES_48_39.get(p, p)
    for p in sorted({v for v in PHONE_MAP_61_48.values() if v is not None})
}

PHONE_MAP_61_39 = {
    p: None if v is None else PHONE_MAP_48_39[v] for p, v in PHONE_MAP_61_48.items()
}
PHONE_MAP_61_60 = {p: None if p == "q" else p for p in TIMIT_61_PHONES}
PHONE_MAP_61_61 = {p: p for p in TIMIT_61_PHONES}

# 61-symbol -> target-symbol table for each supported phone set.
_FOLD_TABLES = {
    61: PHONE_MAP_61_61,
    60: PHONE_MAP_61_60,
    48: PHONE_MAP_61_48,
    39: PHONE_MAP_61_39,
}

# The symbols of each phone set, sorted (61 keeps TIMIT's order).
PHONE_SETS = {
    n: (
        TIMIT_61_PHONES
        if n == 61
        else tuple(sorted({v for v in table.values() if v is not None}))
    )
    for n, table in _FOLD_TABLES.items()
}

LAYOUTS = ("ldc", "lower", "riff_copy")
OPTS_FILENAME = "timit_prepare_opts.json"
# 2: the corpus fingerprint (sizes and times of its files); 3: linked speaker
# folders followed, transcriptions without audio refused, silent recordings
# named (issue 33): manifests of an earlier version are prepared again.
_OPTS_VERSION = 3
_DROPPED_SENTENCES = ("sa1", "sa2")
_AUDIO_SUFFIXES = (".wav", ".flac")
_TRANSCRIPTION_SUFFIXES = (".phn", ".wrd")


class TimitPrepError(RecipeError):
    """Raised when the TIMIT corpus cannot be prepared; says what to fix."""


def fold_phones(phones: list[str], phn_set: int) -> list[str]:
    """Maps a sequence of TIMIT 61-set symbols to the phone set ``phn_set``.

    Each symbol is folded on its own; symbols with no counterpart in the target
    set (``q`` for 60, 48 and 39) are dropped. Repeats produced by folding are
    kept (``["pcl", "h#"]`` -> ``["sil", "sil"]`` for 39).

    Arguments
    ---------
    phones : list of str
        TIMIT symbols, e.g. ``["h#", "sh", "ix", "hv"]``.
    phn_set : int
        One of 39, 48, 60, 61.

    Returns
    -------
    list of str
        The folded symbols.

    Raises
    ------
    TimitPrepError
        For an unsupported ``phn_set`` or a symbol outside the 61 set.

    Example
    -------
    >>> fold_phones(["h#", "sh", "ix", "hv", "q", "eh", "dcl"], 39)
    ['sil', 'sh', 'ih', 'hh', 'eh', 'sil']
    """
    table = _fold_table(phn_set)
    out = []
    for p in phones:
        try:
            folded = table[p]
        except KeyError:
            raise TimitPrepError(
                f"unknown TIMIT phone symbol {p!r}; expected one of the 61 symbols "
                "in TIMIT_61_PHONES"
            ) from None
        if folded is not None:
            out.append(folded)
    return out


def _fold_table(phn_set):
    try:
        return _FOLD_TABLES[int(phn_set)]
    except (KeyError, TypeError, ValueError):
        raise TimitPrepError(
            f"phn_set={phn_set!r} is not supported; use one of 39, 48, 60, 61"
        ) from None


# ---------------------------------------------------------------------------
# Audio headers


def read_sphere_duration(path: str) -> float:
    """Returns the duration in seconds of a NIST SPHERE file from its header.

    Only the header is read. When the header has no ``sample_count`` the
    number of samples is taken from the file size less the header, divided by
    ``sample_n_bytes * channel_count`` (2 and 1 when those are missing too).
    A missing ``sample_rate`` is taken as 16000 Hz (TIMIT's rate).

    Arguments
    ---------
    path : str
        A NIST SPHERE (``NIST_1A``) file.

    Returns
    -------
    float
        Duration in seconds.

    Raises
    ------
    TimitPrepError
        If the file is not a readable NIST SPHERE file.
    """
    fields, header_size = _read_sphere_header(path)
    rate = _int_field(fields, "sample_rate", path) or 16000
    count = _int_field(fields, "sample_count", path)
    if count is None:
        width = _int_field(fields, "sample_n_bytes", path) or 2
        channels = _int_field(fields, "channel_count", path) or 1
        data_bytes = max(os.path.getsize(path) - header_size, 0)
        count = data_bytes // (width * channels)
    return count / rate


def read_sphere(path):
    """Reads a 16-bit PCM NIST SPHERE file (TIMIT's, or the mini corpus's).

    Returns
    -------
    fields : dict
        Header fields: ints for ``-i`` fields, strings otherwise.
    samples : numpy.ndarray
        [S] int16 samples (``sample_byte_format`` 01: little-endian, else big).
    """
    fields, header_size = _read_sphere_header(path)
    order = "<" if fields.get("sample_byte_format", "01") == "01" else ">"
    with open(path, "rb") as f:
        f.seek(header_size)
        data = f.read()
    return fields, np.frombuffer(data, dtype=order + "i2").astype(np.int16)


def _read_sphere_header(path):
    """Returns ({field: value}, header size in bytes) of a SPHERE file; ``-i``
    values that read as integers are ints, the others strings."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            if not head.startswith(b"NIST_1A"):
                raise TimitPrepError(
                    f"{path} is not a NIST SPHERE file (no 'NIST_1A' magic); "
                    "replace it with the file from the original corpus"
                )
            lines = head.split(b"\n", 2)
            try:
                header_size = int(lines[1])
            except (IndexError, ValueError):
                raise TimitPrepError(
                    f"{path}: the SPHERE header size (second line) is unreadable; "
                    "the file is damaged, replace it"
                ) from None
            if header_size > len(head):
                head += f.read(header_size - len(head))
    except OSError as e:
        raise TimitPrepError(f"cannot read {path}: {e}") from e
    fields = {}
    for raw in head[:header_size].split(b"\n")[2:]:
        line = raw.decode("ascii", errors="replace").strip()
        if line == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) == 3:
            name, kind, value = parts
            if kind == "-i" and value.lstrip("-").isdigit():
                value = int(value)
            fields[name] = value
    return fields, header_size


def _int_field(fields, name, path):
    value = fields.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise TimitPrepError(
            f"{path}: SPHERE header field {name} has the unreadable value "
            f"{value!r}; the file is damaged, replace it"
        ) from None


def _riff_duration(path):
    try:
        info = soundfile.info(path)
    except RuntimeError as e:  # soundfile's errors derive from it
        raise TimitPrepError(
            f"cannot read the audio header of {path}: {e}; replace the file"
        ) from e
    return info.frames / info.samplerate


# Bytes per sample of the RIFF subtypes whose data size the header fixes.
_RIFF_SAMPLE_BYTES = {
    "PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
    "FLOAT": 4, "DOUBLE": 8,
}  # fmt: skip


def check_audio_header(path, sphere, sample_rate):
    """What is wrong with one audio file, from its header and size alone.

    Returns (number of samples the header declares, list of problems as
    short phrases; empty when the file is fine). Checks what would otherwise
    crash training mid-epoch or train on wrong data: a header the audio
    reader (libsndfile) cannot parse, another sample rate than
    ``sample_rate``, more than one channel, fewer sample bytes than the header
    declares (a cut-off copy). Reads the header only.
    """
    problems = []
    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError) as err:  # soundfile's errors derive from them
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        return 0, [f"the audio reader cannot parse its header ({reason})"]
    if info.samplerate != sample_rate:
        problems.append(
            f"sample rate {info.samplerate} Hz, the recipe needs {sample_rate} Hz "
            "(resample it)"
        )
    if info.channels != 1:
        problems.append(f"{info.channels} channels, the recipe needs mono")
    size = os.path.getsize(path)
    if sphere:
        fields, header_size = _read_sphere_header(path)
        width = _int_field(fields, "sample_n_bytes", path) or 2
        channels = _int_field(fields, "channel_count", path) or 1
        declared = _int_field(fields, "sample_count", path)
        if declared is None:
            declared = max(size - header_size, 0) // (width * channels)
        held = max(size - header_size, 0) // (width * channels)
    else:
        declared = info.frames
        width = _RIFF_SAMPLE_BYTES.get(info.subtype)
        # A RIFF header is at least 44 bytes; libsndfile may already have
        # clamped the count to the data present (then nothing is missing).
        held = declared if width is None else (size - 44) // (width * info.channels)
    if declared == 0:
        problems.append("no audio samples (an empty recording)")
    if held < declared:
        rate = info.samplerate or sample_rate
        problems.append(
            f"cut off: the header declares {declared} samples "
            f"({declared / rate:.2f} s), the file holds {max(held, 0)} "
            f"({max(held, 0) / rate:.2f} s)"
        )
    return declared, problems


def _problem_list(problems, limit=20):
    """'path: what' lines, at most ``limit``, then how many more."""
    lines = [f"  {path}: {'; '.join(what)}" for path, what in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Transcriptions


def _read_phn(path, table, n_samples=None, problems=None):
    """Reads a .PHN file and returns its folded phones (list of str).

    With ``n_samples`` (the audio's length), label times that do not fit it
    (end before start, or past the end of the audio) are appended to
    ``problems`` as short phrases; the phones are still used (the recipe
    does not use the times).
    """
    phones = []
    bad_times = []
    with open(path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
                raise TimitPrepError(
                    f"{path}, line {lineno}: cannot parse {line.strip()!r}; "
                    "expected 'START END PHONE' (two sample numbers and a symbol). "
                    "Fix or restore the file"
                )
            start, end = int(parts[0]), int(parts[1])
            if end <= start:
                bad_times.append(f"line {lineno}: end {end} not after start {start}")
            elif n_samples and end > n_samples:
                bad_times.append(
                    f"line {lineno}: end {end} past the audio's {n_samples} samples"
                )
            symbol = parts[2].lower()
            if symbol not in table:
                raise TimitPrepError(
                    f"{path}, line {lineno}: unknown phone symbol {parts[2]!r}; "
                    "expected one of TIMIT's 61 symbols. Fix or restore the file"
                )
            folded = table[symbol]
            if folded is not None:
                phones.append(folded)
    if not phones:
        raise TimitPrepError(f"{path} holds no phones; restore the file")
    if bad_times and problems is not None:
        more = f" (+{len(bad_times) - 2} more)" if len(bad_times) > 2 else ""
        problems.append((path, ["label times " + ", ".join(bad_times[:2]) + more]))
    return phones


def _read_wrd(path):
    """Reads a .WRD file and returns its words (list of str)."""
    words = []
    with open(path, encoding="ascii", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise TimitPrepError(
                    f"{path}, line {lineno}: cannot parse {line.strip()!r}; "
                    "expected 'START END WORD'. Fix or restore the file"
                )
            words.append(parts[2])
    return words


# ---------------------------------------------------------------------------
# Corpus discovery


def _find_split_dirs(data_folder):
    """Returns {"train": name, "test": name} of the split folders, or raises."""
    try:
        entries = sorted(e.name for e in os.scandir(data_folder) if e.is_dir())
    except OSError as e:
        raise TimitPrepError(f"cannot list {data_folder}: {e}") from e
    found = {}
    for name in entries:
        key = name.lower()
        if key in ("train", "test"):
            if key in found:
                raise TimitPrepError(
                    f"{data_folder} has both {found[key]!r} and {name!r}; keep one "
                    "copy of the split folder"
                )
            found[key] = name
    missing = [k.upper() for k in ("train", "test") if k not in found]
    if missing:
        raise TimitPrepError(_missing_split_message(data_folder, missing, entries))
    return found


def _has_splits(folder):
    try:
        names = {e.name.lower() for e in os.scandir(folder) if e.is_dir()}
    except OSError:
        return False
    return {"train", "test"} <= names


def _missing_split_message(data_folder, missing, entries):
    msg = (
        f"{data_folder} has no {' and no '.join(missing)} folder; data_folder must "
        "be the TIMIT folder that holds TRAIN and TEST. "
    )
    shown = ", ".join(entries[:20]) + (", ..." if len(entries) > 20 else "")
    msg += f"Folders found there: {shown if entries else 'none'}. "
    # Look one and two levels down for the real corpus folder.
    candidates = []
    for name in entries:
        child = os.path.join(data_folder, name)
        if _has_splits(child):
            candidates.append(child)
            continue
        try:
            grand = sorted(e.name for e in os.scandir(child) if e.is_dir())
        except OSError:
            continue
        candidates += [
            os.path.join(child, g) for g in grand if _has_splits(os.path.join(child, g))
        ]
    preferred = [
        c for c in candidates if os.path.basename(c).lower() in ("timit", "data")
    ]
    candidates = preferred + [c for c in candidates if c not in preferred]
    if candidates:
        msg += f"Did you mean data_folder={candidates[0]!r}?"
    elif os.path.basename(os.path.normpath(data_folder)).lower() in (
        "train",
        "test",
    ) or _has_splits(os.path.dirname(os.path.abspath(data_folder))):
        parent = os.path.dirname(os.path.abspath(data_folder))
        msg += f"Did you point into the corpus? Try data_folder={parent!r}."
    else:
        msg += "Did you point at the folder above the corpus or at the wrong one?"
    return msg


def walk_following_links(top, max_depth=None, _depth=0, _above=()):
    """``os.walk(top)`` that also enters linked folders (a speaker folder may
    be a link into another disk), in sorted order.

    Yields (folder, [subfolder names], [file names]); a broken link is listed
    as a file. ``max_depth`` folders below ``top`` at most (None: no limit); a
    link back to a folder above is not entered (it would loop).
    """
    real = os.path.realpath(top)
    if real in _above:
        return
    try:
        entries = sorted(os.scandir(top), key=lambda entry: entry.name)
    except OSError:
        return
    folders = [e.name for e in entries if e.is_dir()]  # is_dir follows links
    yield top, folders, [e.name for e in entries if not e.is_dir()]
    if max_depth is not None and _depth >= max_depth:
        return
    for name in folders:
        yield from walk_following_links(
            os.path.join(top, name), max_depth, _depth + 1, (*_above, real)
        )


@dataclass
class _Scan:
    """What the split folders hold (see ``_scan``)."""

    speakers: list  # [(split key, DR name, speaker name, {lower name: name})]
    stray_audio: list  # audio files outside a speaker folder
    unread: list  # other files outside speaker folders, folders inside them


def _scan(data_folder, split_dirs):
    """Walks the two split folders once, linked folders included.

    Every folder at depth <split>/<DR>/<SPK> is a speaker folder; files and
    folders anywhere else are listed as ``stray_audio`` or ``unread``, so that
    nothing is left out without a word.
    """
    scan = _Scan([], [], [])
    for key, split_name in sorted(split_dirs.items()):
        top = os.path.join(data_folder, split_name)
        for dirpath, dirnames, filenames in walk_following_links(top, max_depth=2):
            rel = os.path.relpath(dirpath, top)
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            if depth != 2:
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    is_audio = name.lower().endswith(_AUDIO_SUFFIXES)
                    (scan.stray_audio if is_audio else scan.unread).append(path)
                continue
            # Speaker folders hold files only: a folder inside one is not read.
            scan.unread += [os.path.join(dirpath, name) for name in dirnames]
            dr, spk = rel.split(os.sep)
            files = {name.lower(): name for name in filenames}
            scan.speakers.append((key, dr, spk, files))
    return scan


def _detect_layout(split_dirs, speakers):
    for _, _, _, files in speakers:
        if any(n.endswith(".wav.wav") for n in files):
            return "riff_copy"
    names = list(split_dirs.values())
    if all(n == n.lower() for n in names):
        return "lower"
    return "ldc"


# ---------------------------------------------------------------------------
# Preparation


def prepare_timit(
    data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    phn_set=39,
    skip_prep=False,
    layout=None,
    sample_rate=16000,
):
    """Writes the train / valid / test JSON manifests of the TIMIT corpus.

    Arguments
    ---------
    data_folder : str
        The TIMIT folder, the one holding ``TRAIN`` and ``TEST`` (any case).
    save_json_train, save_json_valid, save_json_test : str
        Paths of the manifests to write. ``timit_prepare_opts.json`` is kept
        beside ``save_json_train`` to recognise an earlier identical run.
    phn_set : int
        Phone set of the ``phn`` entries: 39, 48, 60 or 61 (see module doc).
    skip_prep : bool
        If True, do nothing at all.
    layout : str or None
        ``"ldc"``, ``"lower"`` or ``"riff_copy"``; None detects it. With
        ``"riff_copy"`` the RIFF ``.WAV.wav`` files are listed, otherwise the
        SPHERE ``.WAV`` files.
    sample_rate : int
        The rate (Hz) every audio file must have (TIMIT's: 16000).

    Every audio header is checked (``check_audio_header``: rate, channels,
    size against the declared sample count, a header the reader cannot
    parse): one error lists every file that fails. ``.PHN`` label times that
    do not fit their audio are a warning naming each file, and so are
    recordings without sound (every sample the same value).

    Nothing is dropped without a word: linked folders are followed, a
    ``.PHN`` or ``.WRD`` without its audio and audio outside a speaker folder
    are errors naming the files, and what the standard split leaves out (SA
    sentences, other TEST speakers, files never read) is counted in one line.

    Raises
    ------
    TimitPrepError
        If the corpus is missing, misplaced or damaged, or a split is empty.
    """
    if skip_prep:
        return
    _fold_table(phn_set)  # validates phn_set early
    if layout is not None and layout not in LAYOUTS:
        raise TimitPrepError(
            f"layout={layout!r} is not supported; use None (detect) or one of "
            f"{', '.join(LAYOUTS)}"
        )
    if not os.path.isdir(data_folder):
        raise TimitPrepError(
            f"data_folder {data_folder} does not exist or is not a folder; set it "
            "to the TIMIT folder that holds TRAIN and TEST"
        )

    outputs = {"train": save_json_train, "valid": save_json_valid}
    outputs["test"] = save_json_test
    opts_path = os.path.join(
        os.path.dirname(os.path.abspath(save_json_train)), OPTS_FILENAME
    )
    opts = {
        "version": _OPTS_VERSION,
        "data_folder": os.path.abspath(data_folder),
        "phn_set": int(phn_set),
        "layout": layout,
        "sample_rate": int(sample_rate),
        "outputs": {k: os.path.abspath(v) for k, v in outputs.items()},
    }
    opts["corpus"] = corpus_fingerprint(data_folder)
    if _already_prepared(opts_path, opts, outputs.values()):
        logger.info(
            "TIMIT already prepared with the same options (%s); skipping", opts_path
        )
        return
    if _only_the_corpus_changed(opts_path, opts):
        logger.warning(
            "The corpus in %s changed since its manifests were written (a file "
            "added, removed or modified): preparing them again",
            data_folder,
        )

    data = _collect(data_folder, phn_set, layout, int(sample_rate))

    # Remove the old options first: until the new ones are written last, an
    # interrupted run can never look complete.
    if os.path.exists(opts_path):
        os.remove(opts_path)
    for key, path in outputs.items():
        _write_json_atomic(path, data[key])
        logger.info("wrote %s (%d utterances)", path, len(data[key]))
    _write_json_atomic(opts_path, opts)


def corpus_fingerprint(data_folder):
    """SHA-256 (hex) of every file's path, size and modification time in the
    corpus's split folders (linked folders too, down to the speaker folders):
    manifests made before a file was added, removed or edited are then not
    taken for current. Reads no file's contents (TIMIT: 25,000 stat calls,
    well under a second)."""
    digest = hashlib.sha256()
    for split_name in sorted(_find_split_dirs(data_folder).values()):
        top = os.path.join(data_folder, split_name)
        for dirpath, _, filenames in walk_following_links(top, max_depth=2):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue  # a broken link: the scan reports what matters
                rel = os.path.relpath(path, data_folder)
                digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _only_the_corpus_changed(opts_path, opts):
    try:
        with open(opts_path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError):
        return False
    same = {k: v for k, v in opts.items() if k != "corpus"}
    return {k: v for k, v in old.items() if k != "corpus"} == same


def _already_prepared(opts_path, opts, outputs):
    if not all(os.path.isfile(p) for p in [opts_path, *outputs]):
        return False
    try:
        with open(opts_path, encoding="utf-8") as f:
            return json.load(f) == opts
    except (OSError, ValueError):
        return False


def _write_json_atomic(path, obj):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _collect(data_folder, phn_set, layout, sample_rate=16000):
    """Builds {"train": {...}, "valid": {...}, "test": {...}} manifests.

    Every file of the split folders is used, refused (an error naming it), or
    left out as the standard split says and counted in one logged line.
    """
    audio_problems, label_problems, silent, orphans = [], [], [], []
    left_out = _LeftOut()
    table = _fold_table(phn_set)
    split_dirs = _find_split_dirs(data_folder)
    scan = _scan(data_folder, split_dirs)
    if scan.stray_audio:
        stray = [(path, ["not in a speaker folder"]) for path in scan.stray_audio]
        raise TimitPrepError(
            f"{len(stray)} audio file(s) under {data_folder} lie outside a "
            "speaker folder (<split>/<DR>/<SPEAKER>/), where they would not be "
            f"used (nothing was written):\n{_problem_list(stray)}\n"
            "Move each into its speaker's folder, or remove it."
        )
    left_out.unread += scan.unread
    speakers = scan.speakers
    detected = _detect_layout(split_dirs, speakers)
    if layout is None:
        layout = detected
        logger.info("TIMIT layout detected: %s", layout)
    elif layout != detected and "riff_copy" not in (layout, detected):
        logger.info(
            "layout=%r requested, folder names look like %r; names are matched "
            "without regard to case",
            layout,
            detected,
        )
    use_riff = layout == "riff_copy"

    data = {"train": {}, "valid": {}, "test": {}}
    where = {}  # utt_id -> relative path, to report duplicates
    for split_key, dr, spk, files in speakers:
        split_name = split_dirs[split_key]
        spk_l = spk.lower()
        if split_key == "train":
            target = "train"
        elif spk_l in DEV_SPEAKERS:
            target = "valid"
        elif spk_l in TEST_SPEAKERS:
            target = "test"
        else:
            target = None
        rel_dir = f"{split_name}/{dr}/{spk}"
        abs_dir = os.path.join(data_folder, split_name, dr, spk)
        stems = set()
        for lname in files:
            if lname.endswith(".wav.wav"):
                stems.add(lname[: -len(".wav.wav")])
            elif lname.endswith(".wav"):
                stems.add(lname[: -len(".wav")])
        if target is None:  # a TEST speaker of neither standard set
            left_out.other_speakers += 1
            left_out.other_utterances += len(stems - set(_DROPPED_SENTENCES))
            continue
        orphans += _transcriptions_without_audio(abs_dir, files, stems)
        read = set()  # the lower-case names of the files used
        for stem in sorted(stems):
            if stem in _DROPPED_SENTENCES:
                left_out.sa_utterances += 1
                continue
            sphere = files.get(stem + ".wav")
            riff = files.get(stem + ".wav.wav")
            audio = riff if use_riff else sphere
            if audio is None:
                have, want = (
                    (sphere, "RIFF .WAV.wav") if use_riff else (riff, "SPHERE .WAV")
                )
                hint = (
                    "pass layout='ldc' to use the SPHERE .WAV files"
                    if use_riff
                    else "pass layout='riff_copy' to use the RIFF files"
                )
                raise TimitPrepError(
                    f"{os.path.join(abs_dir, have)} has no {want} file beside "
                    f"it (layout {layout!r}); restore it or {hint}"
                )
            base = audio[: -len(".wav.wav")] if use_riff else audio[: -len(".wav")]
            phn_name = files.get(stem + ".phn")
            if phn_name is None:
                raise TimitPrepError(
                    f"{os.path.join(abs_dir, audio)} has no .PHN transcription "
                    f"beside it (expected {os.path.join(abs_dir, base + '.PHN')}); "
                    "restore it from the corpus or remove the audio file"
                )
            wrd_name = files.get(stem + ".wrd")
            if wrd_name is None:
                raise TimitPrepError(
                    f"{os.path.join(abs_dir, audio)} has no .WRD transcription "
                    f"beside it (expected {os.path.join(abs_dir, base + '.WRD')}); "
                    "restore it from the corpus or remove the audio file"
                )
            audio_path = os.path.join(abs_dir, audio)
            try:
                if use_riff:
                    duration = _riff_duration(audio_path)
                else:
                    duration = read_sphere_duration(audio_path)
            except TimitPrepError as err:  # told with the others, below
                audio_problems.append((audio_path, [str(err)]))
                continue
            n_samples, problems = check_audio_header(
                audio_path, not use_riff, sample_rate
            )
            if problems:
                audio_problems.append((audio_path, problems))
            else:
                silent += _no_sound(audio_path)
            read |= {audio.lower(), phn_name.lower(), wrd_name.lower()}
            phones = _read_phn(
                os.path.join(abs_dir, phn_name), table, n_samples, label_problems
            )
            words = _read_wrd(os.path.join(abs_dir, wrd_name))
            utt_id = f"{spk.upper()}_{stem.upper()}"
            rel = f"{rel_dir}/{audio}"
            if utt_id in where:
                raise TimitPrepError(
                    f"utterance {utt_id} found twice: {where[utt_id]} and {rel} "
                    f"under {data_folder}; remove one copy"
                )
            where[utt_id] = rel
            data[target][utt_id] = {
                "wav": "{data_root}/" + rel,
                "duration": duration,
                "spk_id": spk.upper(),
                "phn": " ".join(phones),
                "wrd": " ".join(words),
            }
        for lname, name in sorted(files.items()):
            stem = lname.split(".")[0]
            if lname in read or stem in _DROPPED_SENTENCES:
                continue
            if lname in (stem + ".wav", stem + ".wav.wav") and stem in stems:
                left_out.other_copies += 1  # the SPHERE or RIFF twin of one read
            else:
                left_out.unread.append(os.path.join(abs_dir, name))

    if orphans:
        raise TimitPrepError(
            f"{len(orphans)} transcription file(s) under {data_folder} have no "
            "audio file beside them, so their utterances would be left out "
            f"(nothing was written):\n{_problem_list(orphans)}\n"
            "Restore the audio files from the original corpus, or remove these "
            "transcriptions."
        )
    if audio_problems:
        raise TimitPrepError(
            f"{len(audio_problems)} audio file(s) under {data_folder} cannot be "
            "used as they are (nothing was written):\n"
            f"{_problem_list(audio_problems)}\n"
            "Replace them with the files of the original corpus (or convert "
            f"them to {sample_rate} Hz mono), then run again."
        )
    if label_problems:
        logger.warning(
            "%d .PHN file(s) have label times that do not fit their audio (their "
            "phones are used; the recipe does not use the times, but the files "
            "may be damaged: compare them with the original corpus):\n%s",
            len(label_problems),
            _problem_list(label_problems, limit=50),
        )
    if silent:
        logger.warning(
            "%d recording(s) under %s hold no sound (every sample the same "
            "value): a model trained on them learns their phones from silence, "
            "and a test on them scores nothing. Replace them with the files of "
            "the original corpus, or remove each with its .PHN, .WRD and .TXT:\n%s",
            len(silent),
            data_folder,
            _problem_list(silent, limit=50),
        )
    for key in data:
        data[key] = dict(sorted(data[key].items()))
    _report(data, data_folder, split_dirs)
    logger.info("%s", left_out.describe(data_folder))
    return data


@dataclass
class _LeftOut:
    """What preparation leaves out on purpose, to be counted in one line."""

    sa_utterances: int = 0
    other_speakers: int = 0
    other_utterances: int = 0
    other_copies: int = 0  # SPHERE .WAV beside a RIFF .WAV.wav read, or back
    unread: list = field(default_factory=list)  # files (folders) never read

    def describe(self, data_folder):
        """'Left out ...' (one line)."""
        kinds = Counter(_suffix(path) for path in self.unread)
        shown = []
        for kind, n in sorted(kinds.items(), key=lambda item: (-item[1], item[0])):
            shown.append(f"{n} {kind}")
            if kind != ".txt":  # TIMIT's own text files need no example
                first = next(p for p in self.unread if _suffix(p) == kind)
                shown[-1] += f" (e.g. {os.path.relpath(first, data_folder)})"
        if self.other_copies:
            shown.append(f"{self.other_copies} second copies of audio read")
        return (
            f"Left out as the standard split says: {self.sa_utterances} SA1/SA2 "
            f"utterances, {self.other_utterances} utterances of "
            f"{self.other_speakers} TEST speakers outside the dev and core test "
            f"sets; not read: {', '.join(shown) or 'nothing else'}"
        )


def _suffix(path):
    """'.txt' for a file, 'folder' for a folder (the kinds of unread paths)."""
    if os.path.isdir(path):
        return "folder"
    return os.path.splitext(path)[1].lower() or "without suffix"


def _transcriptions_without_audio(folder, files, stems):
    """[(path, [why])] of the .PHN and .WRD files of ``folder`` (``files``:
    {lower name: name}) whose utterance has no audio (``stems``)."""
    found = []
    for lname, name in sorted(files.items()):
        stem, suffix = os.path.splitext(lname)
        if suffix in _TRANSCRIPTION_SUFFIXES and stem not in stems:
            if stem not in _DROPPED_SENTENCES:
                # The audio's name in the transcription's case (LDC or lower).
                wav = ".WAV" if name[-len(suffix) :].isupper() else ".wav"
                audio = name[: -len(suffix)] + wav
                found.append((os.path.join(folder, name), [f"no {audio} beside it"]))
    return found


def _no_sound(path):
    """[(path, [why])] when every sample of ``path`` has the same value
    (silence written as zeros, a constant offset); [] otherwise. Reads the
    samples: 0.1 s per 1,000 TIMIT-length files in the disk cache."""
    try:
        samples, _ = soundfile.read(path, dtype="int16")
    except (RuntimeError, OSError):
        return []  # the header check named what the reader cannot read
    if samples.size and samples.min() == samples.max():
        return [(path, [f"every sample is {samples.flat[0]}"])]
    return []


def _report(data, data_folder, split_dirs):
    """Logs what was found per split; raises for an empty split."""
    test_dir = os.path.join(data_folder, split_dirs["test"])
    train_dir = os.path.join(data_folder, split_dirs["train"])
    n_spk = len({v["spk_id"] for v in data["train"].values()})
    if not data["train"]:
        raise TimitPrepError(
            f"train split is empty: no utterances found in speaker folders "
            f"{train_dir}/<DR>/<SPEAKER>/; check that the corpus is complete"
        )
    logger.info("train: %d utterances from %d speakers", len(data["train"]), n_spk)
    for key, ref, what in (
        ("valid", DEV_SPEAKERS, "standard dev"),
        ("test", TEST_SPEAKERS, "core test"),
    ):
        found = {v["spk_id"] for v in data[key].values()}
        if not data[key]:
            raise TimitPrepError(
                f"{key} split is empty: none of the {len(ref)} {what} speakers "
                f"(e.g. {', '.join(sorted(ref)[:3]).upper()}) were found in "
                f"{test_dir}/<DR>/; check that the corpus is complete"
            )
        level = logging.INFO if len(found) == len(ref) else logging.WARNING
        logger.log(
            level,
            "%s: %d of the %d %s speakers found (%d utterances)",
            key,
            len(found),
            len(ref),
            what,
            len(data[key]),
        )


def main(argv=None):
    """Command line entry point: ``timit_prepare.py DATA_FOLDER OUT_DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data_folder",
        help="the TIMIT folder holding TRAIN and TEST (any case; LDC, lower-case "
        "or RIFF-copy layout)",
    )
    parser.add_argument(
        "out_dir",
        help="the folder where train.json, valid.json and test.json are written "
        "(the stages' --output_folder does the same)",
    )
    parser.add_argument("--phn_set", type=int, default=39, choices=(39, 48, 60, 61))
    parser.add_argument("--layout", choices=LAYOUTS, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        prepare_timit(
            args.data_folder,
            os.path.join(args.out_dir, "train.json"),
            os.path.join(args.out_dir, "valid.json"),
            os.path.join(args.out_dir, "test.json"),
            phn_set=args.phn_set,
            layout=args.layout,
        )
    except TimitPrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
