"""A pseudo-reference for audio without transcripts: the teachers' consensus.

On unlabelled audio (issue 23) no reference says which teacher is right. The
teachers' greedy hypotheses are compared with each other, and the one with
the smallest total edit distance to all the others (the *medoid*) stands in
for the reference: every teacher's decoder is teacher-forced on it, so the
student's decoder sees aligned targets, and each teacher's error rate
against it replaces the PER the strategies weigh teachers by.

The teacher whose hypothesis *is* the medoid scores 0 against it, so issue 32
adds two things computed from the same pairwise distances: each teacher's
*leave-one-out* reference (the medoid of the other teachers' hypotheses, which
it is scored against instead), and the utterance's *disagreement* (the mean
pairwise edit distance per consensus phone), by which the student may leave
out the utterances the teachers disagree on. Ties between equally central
hypotheses go to the teacher with the lower valid PER (``priority``), then to
the one listed first.

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


def medoid(distances, members=None, priority=None):
    """The member with the smallest total edit distance to the other members.

    Arguments
    ---------
    distances : numpy.ndarray [N, N], symmetric pairwise edit distances.
    members : list of row indices (default: all N).
    priority : [N] numbers or None; ties go to the lowest priority (the
        teachers' valid PER), then to the lowest index.

    Returns
    -------
    int, the row index of the medoid (one of ``members``).
    """
    n = distances.shape[0]
    members = np.arange(n) if members is None else np.asarray(members)
    totals = distances[np.ix_(members, members)].sum(axis=1)
    rank = np.zeros(len(members)) if priority is None else np.asarray(priority)[members]
    # lexsort: the last key decides first.
    return int(members[np.lexsort((members, rank, totals))[0]])


def consensus(hyps, priority=None):
    """The medoid of N hypotheses of one utterance.

    Arguments
    ---------
    hyps : list of N sequences of label ids (N >= 1)
    priority : [N] numbers or None: the tie-break (``medoid``).

    Returns
    -------
    (index, distances)
        ``index``: the hypothesis with the smallest total edit distance to
        the others (ties: the lowest ``priority``, then the lowest index);
        ``distances`` [N, N] int64, symmetric.
    """
    n = len(hyps)
    if n == 0:
        raise ValueError("consensus of no hypotheses")
    upper = [(i, j) for i in range(n) for j in range(i + 1, n)]
    values = edit_distances([(hyps[i], hyps[j]) for i, j in upper])
    distances = np.zeros((n, n), dtype=np.int64)
    for (i, j), value in zip(upper, values, strict=True):
        distances[i, j] = distances[j, i] = value
    return medoid(distances, priority=priority), distances


def leave_one_out(distances, priority=None):
    """Each teacher's reference without its own vote: the medoid of the
    *other* hypotheses.

    Arguments
    ---------
    distances : numpy.ndarray [N, N] from ``consensus``.
    priority : [N] or None, the tie-break (``medoid``).

    Returns
    -------
    numpy.ndarray [N] int64: for teacher k, the teacher whose hypothesis is
    the medoid of all hypotheses but k's (-1 when N == 1: no other teacher).
    With N == 2 each teacher's reference is the other's hypothesis.
    """
    n = distances.shape[0]
    if n == 1:
        return np.full(1, -1, dtype=np.int64)
    return np.asarray(
        [
            medoid(distances, [j for j in range(n) if j != k], priority)
            for k in range(n)
        ],
        dtype=np.int64,
    )


def disagreement(distances, reference_length):
    """How much the teachers disagree on one utterance: the mean pairwise
    edit distance of their hypotheses per phone of the consensus, in %.

    Arguments
    ---------
    distances : numpy.ndarray [N, N] from ``consensus``.
    reference_length : int, the consensus's length (phones).

    Returns
    -------
    float: 100 x mean_{i<j} d(i, j) / max(reference_length, 1), capped at
    100 as the PERs; 0 when all hypotheses agree, NaN when N == 1 (no pair).
    """
    n = distances.shape[0]
    if n < 2:
        return float("nan")
    mean = distances[np.triu_indices(n, 1)].mean()
    return float(min(100.0 * mean / max(reference_length, 1), 100.0))


def unlabelled_scores(distances, hyps, att_hyps, chosen, priority=None):
    """Leave-one-out PERs and the disagreement of B utterances.

    Arguments
    ---------
    distances : list of B [N, N], each utterance's ``consensus`` distances.
    hyps : list of B lists of N greedy CTC hypotheses (label id lists).
    att_hyps : list of B lists of N attention hypotheses (teacher-forced on
        the consensus, cut at eos).
    chosen : [B] int, each utterance's consensus teacher.
    priority : [N] or None, the tie-break (``medoid``).

    Returns
    -------
    dict of numpy arrays: ``loo_teacher`` [B, N] int32 (``leave_one_out``),
    ``loo_ctc_per`` / ``loo_att_per`` [B, N] float32 (each teacher's PER
    against its leave-one-out reference, NaN with one teacher) and
    ``disagreement`` [B] float32 (``disagreement``).
    """
    loo = np.stack([leave_one_out(d, priority) for d in distances])  # [B, N]
    b_n = [(b, k) for b in range(len(hyps)) for k in range(loo.shape[1])]
    ref_lens = np.asarray([len(hyps[b][loo[b, k]]) for b, k in b_n])
    ctc_edits = np.asarray([distances[b][k, loo[b, k]] for b, k in b_n])
    att_edits = edit_distances([(att_hyps[b][k], hyps[b][loo[b, k]]) for b, k in b_n])
    alone = loo.reshape(-1) < 0  # one teacher: nobody else to score it against

    def rates(edits):
        values = np.where(alone, np.nan, rates_from_edits(edits, ref_lens))
        return values.reshape(loo.shape).astype(np.float32)

    spread = [
        disagreement(d, len(h[c]))
        for d, h, c in zip(distances, hyps, chosen, strict=True)
    ]
    return {
        "loo_teacher": loo.astype(np.int32),
        "loo_ctc_per": rates(ctc_edits),
        "loo_att_per": rates(att_edits),
        "disagreement": np.asarray(spread, dtype=np.float32),
    }


def rates_from_edits(edits, reference_lengths):
    """PERs (%) from edit counts, as ``error_rates_against``: 100 x edits /
    length capped at 100; an empty reference gives 0 (no edit) or 100.

    Arguments
    ---------
    edits, reference_lengths : array-likes of the same shape [...].

    Returns
    -------
    numpy.ndarray [...] float32.
    """
    edits = np.asarray(edits, dtype=np.float64)
    lengths = np.asarray(reference_lengths, dtype=np.float64)
    rates = 100.0 * edits / np.maximum(lengths, 1.0)
    rates = np.where(lengths == 0, np.where(edits > 0, 100.0, 0.0), rates)
    return np.minimum(rates, 100.0).astype(np.float32)


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
    edits = edit_distances([(h, reference) for h in hyps])
    return rates_from_edits(edits, np.full(len(hyps), len(reference)))
