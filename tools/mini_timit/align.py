"""Alignment: a synthesiser's phoneme events -> TIMIT segments and words."""

from __future__ import annotations

import numpy as np

from tools.mini_timit.errors import MiniTimitError
from tools.mini_timit.phones import phones_for_mnemonic
from tools.mini_timit.sentences import _WORD_RE

# A stop is written with its closure (TIMIT: ``tcl t``).
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


def align(
    audio,
    sample_rate,
    events,
    text,
    accent,
    count_phonemes=None,
    phone_map=phones_for_mnemonic,
    closure_in_stop=False,
):
    """Turns eSpeak's (or Flite's) events into TIMIT segments and word spans.

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
    phone_map : callable
        ``phone_map(name, accent) -> tuple of TIMIT symbols``:
        ``phones_for_mnemonic`` for eSpeak, ``phones_for_flite`` for Flite.
    closure_in_stop : bool
        Where a stop's closure is. False (eSpeak): in the silence before the
        stop's event (the end of a pause, of ``h#`` or of the phone before),
        else the first 60 % of the stop. True (Flite, whose stop segment
        starts with its closure): the stop's own segment up to the end of its
        last silent stretch, keeping a release of at least 20 % (8 ms), else
        its first 60 %.

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
        symbols = phone_map(payload, accent)
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
        if closure_in_stop:
            cut = _silence_end(audio, start, end, threshold, frame, min_closure)
            if cut is not None:
                out.append([start, cut, closure, w])
                out.append([cut, end, sym, w])
                continue
        elif prev is not None and prev[2] in ("h#", "pau"):
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


def _silence_end(audio, start, end, threshold, frame, min_closure):
    """Where the release of a stop starts when its segment ``[start, end)``
    begins with its closure: the end of the last run of silent frames (at
    least ``min_closure`` samples) that leaves the release 20 % of the
    segment and at least 8 ms; None when there is no such run."""
    keep = max(int(0.2 * (end - start)), 8 * frame)
    n = (end - keep - start) // frame
    if n <= 0:
        return None
    chunk = audio[start : start + n * frame].astype(np.float64).reshape(n, frame)
    silent = np.sqrt(np.mean(chunk**2, axis=1)) < threshold
    run_end, run = None, 0
    for k in range(n):
        run = run + 1 if silent[k] else 0
        if run * frame >= min_closure:
            run_end = k + 1
    return None if run_end is None else start + run_end * frame


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
