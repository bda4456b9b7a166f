"""A pseudo-reference for audio without transcripts: the teachers' consensus.

On unlabelled audio (issue 23) no reference says which teacher is right. The
teachers' greedy hypotheses are compared with each other, and the one with
the smallest total edit distance to all the others (the *medoid*) stands in
for the reference: every teacher's decoder is teacher-forced on it, so the
student's decoder sees aligned targets, and each teacher's error rate
against it replaces the PER the strategies weigh teachers by.

Pure functions on lists of label ids; shapes in the docstrings.
"""

import numpy as np


def edit_distances(pairs):
    """Levenshtein distances of many token sequence pairs at once.

    Arguments
    ---------
    pairs : list of (a, b)
        P pairs of sequences of hashable tokens (label ids).

    Returns
    -------
    numpy.ndarray [P] int64
        Insertions + deletions + substitutions turning each ``a`` into ``b``.

    One row of the dynamic programme per token of the longest ``a``, every
    pair at once: row[j] = min(up + 1, diagonal + cost, left + 1), where the
    ``left`` chain is resolved as j + cummin(candidate[k] - k).
    """
    if not pairs:
        return np.zeros(0, dtype=np.int64)
    n = max(len(a) for a, _ in pairs)
    m = max(len(b) for _, b in pairs)
    count = len(pairs)
    # Tokens as integers; -1 / -2 pad a and b so that padding never matches.
    vocab = {}
    a_ids = np.full((count, n), -1, dtype=np.int64)
    b_ids = np.full((count, m), -2, dtype=np.int64)
    for p, (a, b) in enumerate(pairs):
        a_ids[p, : len(a)] = [vocab.setdefault(t, len(vocab)) for t in a]
        b_ids[p, : len(b)] = [vocab.setdefault(t, len(vocab)) for t in b]
    a_lens = np.array([len(a) for a, _ in pairs])
    b_lens = np.array([len(b) for _, b in pairs])
    columns = np.arange(m + 1)
    row = np.broadcast_to(columns, (count, m + 1)).astype(np.int64)
    final = row[np.arange(count), b_lens].copy()  # a empty: |b| insertions
    for i in range(1, n + 1):
        cost = (a_ids[:, i - 1 : i] != b_ids).astype(np.int64)  # [P, m]
        candidate = np.empty_like(row)
        candidate[:, 0] = i
        candidate[:, 1:] = np.minimum(row[:, 1:] + 1, row[:, :-1] + cost)
        row = columns + np.minimum.accumulate(candidate - columns, axis=1)
        done = a_lens == i
        final[done] = row[done, b_lens[done]]
    return final


def consensus(hyps):
    """The medoid of N hypotheses of one utterance.

    Arguments
    ---------
    hyps : list of N sequences of label ids (N >= 1)

    Returns
    -------
    (index, distances)
        ``index``: the hypothesis with the smallest total edit distance to
        the others (ties: the lowest index, so the teacher list's order
        decides, as for ``best``); ``distances`` [N, N] int64, symmetric.
    """
    n = len(hyps)
    if n == 0:
        raise ValueError("consensus of no hypotheses")
    upper = [(i, j) for i in range(n) for j in range(i + 1, n)]
    values = edit_distances([(hyps[i], hyps[j]) for i, j in upper])
    distances = np.zeros((n, n), dtype=np.int64)
    for (i, j), value in zip(upper, values, strict=True):
        distances[i, j] = distances[j, i] = value
    return int(np.argmin(distances.sum(axis=1))), distances


def error_rates_against(hyps, reference):
    """Each hypothesis's error rate (%) against ``reference``, as a PER.

    Arguments
    ---------
    hyps : list of N sequences; reference : a sequence (the consensus)

    Returns
    -------
    numpy.ndarray [N] float32
        100 x edits / len(reference), capped at 100 as the store's PERs
        (an empty reference: 0 for an empty hypothesis, else 100).
    """
    edits = edit_distances([(h, reference) for h in hyps]).astype(np.float64)
    if len(reference) == 0:
        return np.where(edits > 0, 100.0, 0.0).astype(np.float32)
    return np.minimum(100.0 * edits / len(reference), 100.0).astype(np.float32)
