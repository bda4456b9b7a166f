"""mtkd/consensus.py: edit distances, the medoid hypothesis, error rates
against it; numbers worked out by hand, and a naive DP as the oracle."""

import numpy as np
import pytest

from mtkd.consensus import (
    consensus,
    disagreement,
    edit_distances,
    error_rates_against,
    leave_one_out,
    medoid,
    rates_from_edits,
    unlabelled_scores,
)


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


# The four hypotheses of test_consensus_is_the_medoid and their distances.
HYPS = [[1, 2, 3], [1, 2, 4], [1, 2, 3, 5], [9]]


def test_ties_go_to_the_lower_valid_per_then_to_the_list():
    _, distances = consensus(HYPS)
    # Over the members {0, 1, 3}, 0 and 1 tie: 0: d01 + d03 = 1 + 3 = 4;
    # 1: d01 + d13 = 1 + 3 = 4; 3: d03 + d13 = 3 + 3 = 6.
    assert medoid(distances, [0, 1, 3]) == 0  # no priority: the list order
    assert medoid(distances, [0, 1, 3], priority=[5.0, 3.0, 4.0, 9.0]) == 1
    assert medoid(distances, [0, 1, 3], priority=[3.0, 3.0, 4.0, 9.0]) == 0
    # Two teachers always tie: the one with the lower valid PER wins.
    assert consensus([[1], [2]])[0] == 0
    assert consensus([[1], [2]], priority=[9.0, 3.0])[0] == 1
    # A clear medoid is not moved by the priority.
    assert consensus(HYPS, priority=[9.0, 1.0, 1.0, 1.0])[0] == 0


def test_leave_one_out_is_the_medoid_of_the_others():
    _, distances = consensus(HYPS)
    # without 0: totals over {1, 2, 3}: 1: 2 + 3 = 5, 2: 2 + 4 = 6, 3: 7 -> 1
    # without 1: {0, 2, 3}: 0: 1 + 3 = 4, 2: 1 + 4 = 5, 3: 7 -> 0
    # without 2: {0, 1, 3}: 0: 4, 1: 4 (a tie), 3: 6 -> 0, or 1 by valid PER
    # without 3: {0, 1, 2}: 0: 1 + 1 = 2, 1: 3, 2: 3 -> 0
    assert leave_one_out(distances).tolist() == [1, 0, 0, 0]
    assert leave_one_out(distances, [5.0, 3.0, 4.0, 9.0]).tolist() == [1, 0, 1, 0]
    # Two teachers: each one's reference is the other's hypothesis.
    assert leave_one_out(consensus([[1], [2, 3]])[1]).tolist() == [1, 0]
    assert leave_one_out(consensus([[7]])[1]).tolist() == [-1]  # nobody else


def test_disagreement_is_the_mean_pairwise_distance_per_consensus_phone():
    _, distances = consensus(HYPS)
    # pairs 1, 1, 3, 2, 3, 4: mean 14 / 6; consensus [1, 2, 3]: 3 phones
    assert disagreement(distances, 3) == pytest.approx(100 * 14 / 6 / 3)
    assert disagreement(consensus([[4, 5], [4, 5], [4, 5]])[1], 2) == 0.0
    assert disagreement(consensus([[], [1, 2, 3]])[1], 0) == 100.0  # capped
    assert np.isnan(disagreement(consensus([[4, 5]])[1], 2))  # one teacher


def test_unlabelled_scores_by_hand():
    chosen, distances = consensus(HYPS)
    att = [[1, 2, 3], [1, 2, 3], [1, 2], [1, 2, 3]]
    got = unlabelled_scores([distances], [HYPS], [att], [chosen])
    assert got["loo_teacher"].tolist() == [[1, 0, 0, 0]]
    assert got["loo_teacher"].dtype == np.int32
    # CTC: d(0, 1), d(1, 0), d(2, 0), d(3, 0) = 1, 1, 1, 3 over 3 phones each
    third = 100 / 3
    assert got["loo_ctc_per"][0].tolist() == pytest.approx([third, third, third, 100])
    # attention: [1, 2, 3] vs [1, 2, 4]: 1; vs [1, 2, 3]: 0; [1, 2] vs it: 1; 0
    assert got["loo_att_per"][0].tolist() == pytest.approx([third, 0, third, 0])
    assert got["disagreement"].tolist() == pytest.approx([100 * 14 / 18])
    # One teacher: no other to score it against.
    _, alone = consensus([[4, 5]])
    got = unlabelled_scores([alone], [[[4, 5]]], [[[4, 5]]], [0])
    assert np.isnan(got["loo_ctc_per"]).all() and np.isnan(got["disagreement"]).all()


def test_rates_from_edits_as_the_stores_pers():
    rates = rates_from_edits([0, 1, 5, 0, 2], [4, 4, 4, 0, 0])
    assert rates.dtype == np.float32
    assert rates.tolist() == pytest.approx([0.0, 25.0, 100.0, 0.0, 100.0])
