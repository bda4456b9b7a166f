"""Builds a fake TIMIT corpus with the real folder layout and tiny audio.

``make_fake_timit(root)`` lays out a full-size corpus (630 speakers, 6300
utterances) in a few seconds: every file of a kind has the same bytes. Used by
the tests of ``timit_prepare.py`` and by benchmarks.
"""

from __future__ import annotations

import io
import math
import os
import string
import wave

from timit_prepare import DEV_SPEAKERS, TEST_SPEAKERS, TIMIT_61_PHONES

SAMPLE_RATE = 16000
N_DR = 8

# The phone sequence of every fake utterance: h#, every other symbol once, h#.
FAKE_PHONES = ("h#", *(p for p in TIMIT_61_PHONES if p != "h#"), "h#")
FAKE_WORDS = tuple("she had your dark suit in greasy wash water all year".split())

# Full-corpus sizes.
FULL_TRAIN_SPEAKERS = 462
FULL_OTHER_TEST_SPEAKERS = 94
# Sizes when full=False.
MINI_TRAIN_SPEAKERS = 8
MINI_DEV_SPEAKERS = 4
MINI_TEST_SPEAKERS = 4
MINI_OTHER_TEST_SPEAKERS = 2

LAYOUTS = ("ldc", "lower", "riff_copy")


def made_up_speakers(n, taken=frozenset()):
    """Returns ``n`` distinct TIMIT-like speaker IDs (``FABC0``), upper case.

    IDs in ``taken`` (any case) and the standard dev/test speakers are avoided.
    """
    avoid = {s.lower() for s in taken} | DEV_SPEAKERS | TEST_SPEAKERS
    letters = string.ascii_uppercase
    out = []
    i = 0
    while len(out) < n:
        code = (i * 7919 + 31) % (26**3)  # spread over the alphabet
        name = letters[code // 676] + letters[code // 26 % 26] + letters[code % 26]
        spk = "FM"[i % 2] + name + str(i // (26**3) % 10)
        i += 1
        if spk.lower() not in avoid:
            avoid.add(spk.lower())
            out.append(spk)
    return out


def utterance_names(speaker_index):
    """The 10 sentence IDs of a speaker: SA1, SA2, 5 SX and 3 SI."""
    sx = [3 + (5 * speaker_index + j) % 450 for j in range(5)]
    si = [453 + (3 * speaker_index + j) % 1890 for j in range(3)]
    return ["SA1", "SA2", *(f"SX{n}" for n in sx), *(f"SI{n}" for n in si)]


def sphere_bytes(n_samples, sample_count=True):
    """A NIST SPHERE file (1024-byte header, 16 kHz int16 PCM) as bytes."""
    fields = [
        "NIST_1A",
        "   1024",
        "database_id -s5 TIMIT",
        "database_version -s3 1.0",
        "utterance_id -s8 fake_utt",
        "channel_count -i 1",
    ]
    if sample_count:
        fields.append(f"sample_count -i {n_samples}")
    fields += [
        f"sample_rate -i {SAMPLE_RATE}",
        "sample_min -i -1000",
        "sample_max -i 1000",
        "sample_n_bytes -i 2",
        "sample_byte_format -s2 01",
        "sample_sig_bits -i 16",
        "sample_coding -s3 pcm",
        "end_head",
    ]
    header = ("\n".join(fields) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    return header + _pcm(n_samples)


def riff_bytes(n_samples):
    """A RIFF/WAVE file (16 kHz int16 mono) as bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(_pcm(n_samples))
    return buf.getvalue()


def _pcm(n_samples):
    values = (
        int(1000 * math.sin(2 * math.pi * 440 * t / SAMPLE_RATE))
        for t in range(n_samples)
    )
    return b"".join(v.to_bytes(2, "little", signed=True) for v in values)


def phn_text(n_samples, phones=FAKE_PHONES):
    """A contiguous .PHN text covering ``n_samples`` with ``phones``."""
    k = len(phones)
    bounds = [round(i * n_samples / k) for i in range(k + 1)]
    return "".join(f"{bounds[i]} {bounds[i + 1]} {p}\n" for i, p in enumerate(phones))


def wrd_text(n_samples, words=FAKE_WORDS):
    """A .WRD text spreading ``words`` over ``n_samples``."""
    k = len(words)
    bounds = [round(i * n_samples / k) for i in range(k + 1)]
    return "".join(f"{bounds[i]} {bounds[i + 1]} {w}\n" for i, w in enumerate(words))


def txt_text(n_samples, words=FAKE_WORDS):
    """A .TXT text: the sentence, capitalised, with a full stop."""
    sentence = " ".join(words)
    return f"0 {n_samples} {sentence[:1].upper()}{sentence[1:]}.\n"


def make_fake_timit(
    root,
    layout="ldc",
    full=True,
    utt_samples=160,
    *,
    n_train=None,
    n_dev=None,
    n_test=None,
    n_other_test=None,
):
    """Creates a fake TIMIT corpus under ``root`` and returns ``root``.

    Arguments
    ---------
    root : str or path-like
        The corpus folder (it will hold TRAIN and TEST); created if needed.
    layout : str
        ``"ldc"`` (``TRAIN/DR1/FCJF0/SI1027.WAV``, SPHERE), ``"lower"`` (all
        names lower-cased) or ``"riff_copy"`` (LDC plus a RIFF ``.WAV.wav``
        beside every SPHERE ``.WAV``).
    full : bool
        True: the full-size corpus, 462 train speakers over DR1..DR8 and 168
        test speakers (the 24 core test, the 50 dev and 94 made-up others), 10
        utterances each (SA1, SA2, 5 SX, 3 SI): 6300 utterances. False: 8 train
        speakers, the first 4 dev and 4 core test speakers (sorted) and 2
        others.
    utt_samples : int
        Number of samples of every utterance (16 kHz).
    n_train, n_dev, n_test, n_other_test : int, optional
        Override the number of train speakers, standard dev speakers, core test
        speakers and other test speakers.

    Every utterance has a ``.PHN`` with ``FAKE_PHONES`` (all 61 symbols, h# at
    both ends), a ``.WRD`` with ``FAKE_WORDS`` and a ``.TXT``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if n_train is None:
        n_train = FULL_TRAIN_SPEAKERS if full else MINI_TRAIN_SPEAKERS
    if n_dev is None:
        n_dev = len(DEV_SPEAKERS) if full else MINI_DEV_SPEAKERS
    if n_test is None:
        n_test = len(TEST_SPEAKERS) if full else MINI_TEST_SPEAKERS
    if n_other_test is None:
        n_other_test = FULL_OTHER_TEST_SPEAKERS if full else MINI_OTHER_TEST_SPEAKERS

    train_spk = made_up_speakers(n_train)
    test_spk = [s.upper() for s in sorted(TEST_SPEAKERS)[:n_test]]
    test_spk += [s.upper() for s in sorted(DEV_SPEAKERS)[:n_dev]]
    test_spk += made_up_speakers(n_other_test, taken=set(train_spk))

    lower = layout == "lower"
    riff = layout == "riff_copy"

    def name(s):
        return s.lower() if lower else s

    contents = {
        ".WAV": sphere_bytes(utt_samples),
        ".PHN": phn_text(utt_samples).encode("ascii"),
        ".WRD": wrd_text(utt_samples).encode("ascii"),
        ".TXT": txt_text(utt_samples).encode("ascii"),
    }
    if riff:
        contents[".WAV.wav"] = riff_bytes(utt_samples)
    # (file suffix as written, bytes)
    files = [
        (name(ext) if ext != ".WAV.wav" else ext, b) for ext, b in contents.items()
    ]

    index = 0
    for split, speakers in (("TRAIN", train_spk), ("TEST", test_spk)):
        os.makedirs(os.path.join(root, name(split)), exist_ok=True)
        for i, spk in enumerate(speakers):
            folder = os.path.join(
                root, name(split), name(f"DR{i % N_DR + 1}"), name(spk)
            )
            os.makedirs(folder, exist_ok=True)
            for utt in utterance_names(index):
                stem = os.path.join(folder, name(utt))
                for suffix, data in files:
                    with open(stem + suffix, "wb") as f:
                        f.write(data)
            index += 1
    return root
