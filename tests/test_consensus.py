"""mtkd/consensus.py: edit distances, the medoid hypothesis, error rates
against it; numbers worked out by hand, and a naive DP as the oracle."""

import numpy as np
import pytest

from mtkd.consensus import consensus, edit_distances, error_rates_against


def naive_distance(a, b):
    """Textbook Levenshtein, one cell at a time."""
    rows = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)]
            for i in range(len(a) + 1)]  # fmt: skip
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            rows[i][j] = min(
                rows[i - 1][j] + 1,
                rows[i][j - 1] + 1,
                rows[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return rows[-1][-1]


def test_edit_distances_worked_by_hand():
    pairs = [
        ("kitten", "sitting"),  # k->s, e->i, +g
        ("", "abc"),
        ("abc", ""),
        ("abc", "abc"),
        ("ab", "ba"),
        ("flaw", "lawn"),  # -f, +n
    ]
    assert edit_distances(pairs).tolist() == [3, 3, 3, 0, 2, 2]
    assert edit_distances([]).shape == (0,)


def test_edit_distances_agree_with_the_textbook_programme():
    rng = np.random.default_rng(0)
    pairs = [
        (list(rng.integers(0, 5, rng.integers(0, 12))),
         list(rng.integers(0, 5, rng.integers(0, 12))))
        for _ in range(300)
    ]  # fmt: skip
    assert edit_distances(pairs).tolist() == [naive_distance(a, b) for a, b in pairs]


def test_consensus_is_the_medoid():
    hyps = [[1, 2, 3], [1, 2, 4], [1, 2, 3, 5], [9]]
    # d(0,1)=1 d(0,2)=1 d(0,3)=3 d(1,2)=2 d(1,3)=3 d(2,3)=4; row sums 5 6 7 10
    index, distances = consensus(hyps)
    assert index == 0
    assert distances.sum(axis=1).tolist() == [5, 6, 7, 10]
    assert (distances == distances.T).all() and (np.diag(distances) == 0).all()
    assert consensus([[1], [2]])[0] == 0  # a tie: the first teacher
    assert consensus([[7, 7]])[0] == 0  # one teacher: itself
    with pytest.raises(ValueError):
        consensus([])


def test_error_rates_against_the_consensus():
    rates = error_rates_against(
        [[1, 2, 3], [1, 2, 4], [], [1, 2, 3, 4, 5, 6, 7]], [1, 2, 3]
    )
    assert rates.dtype == np.float32
    assert rates.tolist() == pytest.approx([0.0, 100 / 3, 100.0, 100.0])
    assert error_rates_against([[], [1]], []).tolist() == [0.0, 100.0]
