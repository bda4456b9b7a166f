"""mtkd_tools.significance: per-utterance edit counts, the paired bootstrap
and the seed-level tests, checked against hand-worked examples and against
scipy.stats."""

import os

import numpy as np
import pytest
from conftest import write_per_test

from mtkd_tools.significance import (
    SignificanceError,
    describe,
    paired_bootstrap,
    paired_t_test,
    read_edit_counts,
    seed_level_tests,
    sign_flip_test,
    verdict,
)


def counts(tmp_path, name, edits, refs=None, ids=None):
    """read_edit_counts of a per_test.txt with these per-utterance counts."""
    refs = refs or [10] * len(edits)
    path = write_per_test(tmp_path / f"{name}.txt", edits, refs, ids)
    return read_edit_counts(path)


def test_reads_what_speechbrain_writes(tmp_path):
    ids = ["MDAB0_SI1039", "MDAB0_SX139", "FELC0_SI1386"]
    path = write_per_test(tmp_path / "per_test.txt", [3, 0, 12], [20, 15, 10], ids)
    run = read_edit_counts(path)
    assert sorted(run["ids"]) == sorted(ids)
    pairs = zip(run["edits"].tolist(), run["ref_tokens"].tolist(), strict=True)
    by_id = dict(zip(run["ids"], pairs, strict=True))
    assert by_id == {"MDAB0_SI1039": (3, 20), "MDAB0_SX139": (0, 15),
                     "FELC0_SI1386": (12, 10)}  # fmt: skip
    # A report cut short no longer adds up to its summary line.
    text = open(path).read()
    cut = text[: text.rindex("=" * 80)]
    (tmp_path / "cut.txt").write_text(cut)
    with pytest.raises(SignificanceError, match="cut.txt.*incomplete"):
        read_edit_counts(str(tmp_path / "cut.txt"))
    (tmp_path / "empty.txt").write_text("PER: 1.00  CTC_PER: 2.00\n")
    with pytest.raises(SignificanceError, match="empty.txt: no per-utterance"):
        read_edit_counts(str(tmp_path / "empty.txt"))


def test_reads_a_real_runs_report(tiny_teachers):
    """A tiny teacher's per_test.txt: the counts give the PER on its first line."""
    run_folder = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    run = read_edit_counts(os.path.join(run_folder, "per_test.txt"))
    with open(os.path.join(run_folder, "per_test.txt")) as f:
        per = float(f.readline().split()[1])
    assert len(run["ids"]) == 16  # tiny corpus: 2 core-test speakers x 8
    assert all("_" in utt for utt in run["ids"])
    assert 100 * run["edits"].sum() / run["ref_tokens"].sum() == pytest.approx(
        per, abs=0.005
    )


def test_student_better_by_one_edit_everywhere(tmp_path):
    """20 utterances of 10 phones, one edit fewer in each: -10 PER points
    exactly, in every replicate, so the interval is a point and p is the
    smallest 10,000 resamples give."""
    base_edits = [2 + k % 4 for k in range(20)]
    base = counts(tmp_path, "base", base_edits)
    student = counts(tmp_path, "kd", [e - 1 for e in base_edits])
    result = paired_bootstrap([base], [student])
    assert result["difference"] == pytest.approx(-10.0)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((-10.0, -10.0))
    assert result["p_value"] == pytest.approx(2 / 10001)
    baseline_per = 100 * sum(base_edits) / 200
    assert result["baseline_PER"] == pytest.approx(baseline_per)
    assert result["relative"] == pytest.approx(-1000 / baseline_per)
    # One seed: the bootstrap covers utterances only; no verdict without seeds.
    assert verdict(result) == (
        "not shown (1 seed: a seed-level test needs at least 3; 6 for a "
        "sign-flip test to reach 0.05)"
    )
    # Three seeds that agree: both tests below 0.05, a verdict.
    three = {**result, "seed_level": seed_level_tests([-10.0, -9.0, -11.0])}
    assert verdict(three) == "lower PER than the baseline"
    worse = paired_bootstrap([student], [base])
    assert worse["difference"] == pytest.approx(10.0)
    worse3 = {**worse, "seed_level": seed_level_tests([10.0, 9.0, 11.0])}
    assert verdict(worse3, baseline="X") == "higher PER than X"
    # Seeds that disagree: the bootstrap alone does not make a verdict.
    spread = {**result, "seed_level": seed_level_tests([-30.0, -1.0, 1.0])}
    assert verdict(spread) == "not shown (seed-level t-test p = 0.423 >= 0.05)"


def test_null_cases_give_large_p_values(tmp_path):
    edits = [1, 4, 0, 7, 3, 2, 5, 1, 0, 6]
    base = counts(tmp_path, "base", edits)
    same = paired_bootstrap([base], [counts(tmp_path, "same", edits)])
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    assert verdict(same).startswith("not shown (no difference")
    # Swaps: one edit more on half the utterances, one fewer on the other half.
    base_edits = [e + 1 for e in edits]
    swapped = [e + (1 if k % 2 else -1) for k, e in enumerate(base_edits)]
    result = paired_bootstrap(
        [counts(tmp_path, "b2", base_edits)],
        [counts(tmp_path, "s2", swapped)],
        unit="utterance",
    )
    assert result["difference"] == pytest.approx(0.0)
    assert result["p_value"] > 0.5
    assert result["ci_low"] < 0 < result["ci_high"]


def test_two_utterances_by_hand(tmp_path):
    """Utterance A: 2 edits fewer, B: 1 more (10 phones each): -5 points. The
    replicates are A twice (-20, probability 1/4), A and B (-5, 1/2), B twice
    (+10, 1/4): the 95 % interval is -20 to +10 and p = 2 x 1/4."""
    base = counts(tmp_path, "base", [4, 3], ids=["S1_A", "S2_B"])
    student = counts(tmp_path, "kd", [2, 4], ids=["S1_A", "S2_B"])
    result = paired_bootstrap([base], [student])
    assert result["difference"] == pytest.approx(-5.0)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((-20.0, 10.0))
    assert result["p_value"] == pytest.approx(0.5, abs=0.03)
    assert verdict(result).startswith("not shown (1 seed")
    # Fixed generator seed: the same inputs give the same answer.
    assert paired_bootstrap([base], [student]) == result


def test_pooling_over_seeds_pairs_seed_i_with_seed_i(tmp_path):
    """Seed 0: the student has 2 edits fewer on each of 10 utterances (-20
    points); seed 1: the same edits as its baseline (0). Pooled: -10. With the
    seeds held fixed every replicate is -10; drawn too, the pairs give -20
    (1/4), -10 (1/2) or 0 (1/4), so the interval reaches 0 and p = 2 x 1/4."""
    edits = [3 + k % 3 for k in range(10)]
    base = [counts(tmp_path, "b0", edits), counts(tmp_path, "b1", edits)]
    kd = [counts(tmp_path, "k0", [e - 2 for e in edits]), counts(tmp_path, "k1", edits)]
    fixed = paired_bootstrap(base, kd, resample_seeds=False)
    assert fixed["difference"] == pytest.approx(-10.0)
    assert fixed["seed_differences"] == pytest.approx([-20.0, 0.0])
    assert fixed["seeds_lower"] == 1 and fixed["n_seeds"] == 2
    assert (fixed["ci_low"], fixed["ci_high"]) == pytest.approx((-10.0, -10.0))
    assert fixed["p_value"] < 0.001
    drawn = paired_bootstrap(base, kd)
    assert drawn["difference"] == pytest.approx(-10.0) and drawn["resample_seeds"]
    assert (drawn["ci_low"], drawn["ci_high"]) == pytest.approx((-20.0, 0.0))
    assert drawn["p_value"] == pytest.approx(0.5, abs=0.03)
    # Pairing matters: seed 0's student against seed 1's baseline is another test.
    crossed = paired_bootstrap(base, kd[::-1], resample_seeds=False)
    assert crossed["seed_differences"] == pytest.approx([0.0, -20.0])
    with pytest.raises(SignificanceError, match="2 student run.*1 baseline"):
        paired_bootstrap(base[:1], kd)


def test_speakers_as_units(tmp_path):
    """Speaker S1 (2 utterances) gains 4 edits in all, S2 (2 utterances)
    loses 2: by speaker, the replicates are -40, -10 and +20 points."""
    ids = ["S1_A", "S1_B", "S2_C", "S2_D"]
    base = counts(tmp_path, "b", [3, 3, 1, 1], refs=[5, 5, 5, 5], ids=ids)
    student = counts(tmp_path, "k", [1, 1, 2, 2], refs=[5, 5, 5, 5], ids=ids)
    result = paired_bootstrap([base], [student], unit="speaker")
    assert (result["n_units"], result["n_utterances"]) == (2, 4)
    assert result["difference"] == pytest.approx(-10.0)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((-40.0, 20.0))
    by_utterance = paired_bootstrap([base], [student], unit="utterance")
    assert by_utterance["n_units"] == 4
    assert by_utterance["difference"] == pytest.approx(-10.0)
    assert "over 2 speakers (4 utterances) and 1 seed;" in describe("a", "b", result)
    # Speakers are the default unit.
    assert paired_bootstrap([base], [student]) == result
    with pytest.raises(SignificanceError, match="unit='word'"):
        paired_bootstrap([base], [student], unit="word")


def test_runs_must_share_the_test_set(tmp_path):
    base = counts(tmp_path, "base", [1, 2], ids=["S1_A", "S1_B"])
    other = counts(tmp_path, "other", [1, 2], ids=["S1_A", "S1_C"])
    with pytest.raises(SignificanceError, match="other.txt and .*base.txt are not"):
        paired_bootstrap([base], [other])
    longer = counts(tmp_path, "longer", [1, 2], refs=[10, 11], ids=["S1_A", "S1_B"])
    with pytest.raises(SignificanceError, match="different references for S1_B"):
        paired_bootstrap([base], [longer])


def test_verdict_sentence(tmp_path):
    base = counts(tmp_path, "base", [2 + k % 4 for k in range(20)])
    student = counts(tmp_path, "kd", [1 + k % 4 for k in range(20)])
    result = paired_bootstrap([base], [student])
    sentence = describe("student-best", "student-baseline", result)
    assert sentence == (
        "student-best vs student-baseline: -10.00 PER points (-28.6 % relative; "
        "95 % CI -10.00 to -10.00, p < 0.001, paired bootstrap over 3 "
        "speakers (20 utterances) and 1 seed; seed-level tests: need 2 or more "
        "seeds; lower in 1 of 1 seed): not shown (1 seed: a seed-level test "
        "needs at least 3; 6 for a sign-flip test to reach 0.05)."
    )
    assert np.isclose(result["relative"], -100 / 3.5)


def test_the_sentence_of_several_seeds(tmp_path):
    """Three seeds, each one edit fewer on every utterance of 10 phones, on
    two speakers: -10 points in every seed and every replicate; the t-test
    has no spread to test against (p 0) and the sign-flip test gives its
    floor with 3 pairs, 2/8."""
    ids = [f"S{k % 2}_U{k}" for k in range(8)]
    base = [counts(tmp_path, f"b{s}", [3] * 8, ids=ids) for s in range(3)]
    kd = [counts(tmp_path, f"k{s}", [2] * 8, ids=ids) for s in range(3)]
    sentence = describe("kd", "base", paired_bootstrap(base, kd))
    assert sentence == (
        "kd vs base: -10.00 PER points (-33.3 % relative; 95 % CI -10.00 to "
        "-10.00, p < 0.001, paired bootstrap over 2 speakers (8 utterances) and "
        "3 seeds; seed-level t-test p < 0.001, sign-flip p = 0.250; lower in 3 "
        "of 3 seeds): lower PER than base."
    )


def test_paired_t_test_by_hand():
    """Differences -1, -2, -3: mean -2, sd 1, t = -2 / (1 / sqrt 3) = -3.4641
    with 2 degrees of freedom; for df 2 the two-sided tail is exactly
    1 - |t| / sqrt(t^2 + 2) = 0.07418."""
    result = paired_t_test([-1.0, -2.0, -3.0])
    assert result["t"] == pytest.approx(-2 * 3**0.5)
    assert result["df"] == 2
    assert result["p_value"] == pytest.approx(1 - 12**0.5 / 14**0.5, rel=1e-9)
    # df 1 is a Cauchy: the two-sided tail of t is 1 - (2 / pi) atan |t|;
    # 1 and 3 give mean 2, sd sqrt 2, t = 2.
    expected = 1 - 2 / np.pi * np.arctan(2.0)
    assert paired_t_test([1.0, 3.0])["p_value"] == pytest.approx(expected, rel=1e-9)
    assert paired_t_test([-0.4])["p_value"] is None  # no spread to test
    assert paired_t_test([0.5, 0.5])["p_value"] == 0.0
    assert paired_t_test([0.0, 0.0])["p_value"] == 1.0


def test_sign_flip_test_by_hand():
    """Differences -1, -2, +0.5 (sum -2.5): of the 8 sign patterns, the sums
    of absolute value at least 2.5 are -3.5, -2.5 and their mirror images:
    p = 4/8. Three pairs that agree reach only 2/8; six reach 2/64."""
    assert sign_flip_test([-1.0, -2.0, 0.5]) == pytest.approx(0.5)
    assert sign_flip_test([-1.0, -2.0, -0.5]) == pytest.approx(0.25)
    assert sign_flip_test([-1.0] * 6) == pytest.approx(2 / 64)
    assert sign_flip_test([]) is None


@pytest.mark.parametrize("n", [2, 3, 5, 6, 8])
def test_seed_level_tests_agree_with_scipy(n):
    stats = pytest.importorskip("scipy.stats")  # speechbrain brings scipy
    rng = np.random.default_rng(n)
    for _ in range(5):
        differences = rng.normal(-0.4, 0.5, n)
        ours = seed_level_tests(list(differences))
        t = stats.ttest_rel(differences, np.zeros(n))
        assert ours["t"] == pytest.approx(t.statistic, rel=1e-9)
        assert ours["t_p_value"] == pytest.approx(t.pvalue, rel=1e-7)
        exact = stats.permutation_test(
            (differences,), np.mean, permutation_type="samples",
            n_resamples=np.inf,
        )  # fmt: skip
        assert ours["sign_flip_p_value"] == pytest.approx(exact.pvalue, rel=1e-9)


def test_a_seed_level_test_says_why_it_cannot_be_computed():
    assert seed_level_tests([-0.5])["reason"].startswith("1 seed: a seed-level")
    two = seed_level_tests([-0.5, -0.6])
    assert two["reason"] == (
        "2 seeds: a seed-level test needs at least 3; 6 for a sign-flip test "
        "to reach 0.05"
    )
    assert seed_level_tests([-0.5, -0.6, -0.4])["reason"] is None
