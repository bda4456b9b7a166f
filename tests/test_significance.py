"""mtkd_tools.significance: per-utterance edit counts and the paired bootstrap,
checked against hand-worked examples."""

import os

import numpy as np
import pytest
from conftest import write_per_test

from mtkd_tools.significance import (
    SignificanceError,
    describe,
    paired_bootstrap,
    read_edit_counts,
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
    # One seed: the bootstrap covers utterances only; seeds decide.
    assert verdict(result).startswith("lower PER than the baseline on these utt")
    assert verdict(result).endswith("seeds decide (run 3 or more)")
    assert verdict({**result, "n_seeds": 3}) == "better than the baseline"
    worse = paired_bootstrap([student], [base])
    assert worse["difference"] == pytest.approx(10.0)
    assert verdict(worse).startswith("higher PER than the baseline on these utt")
    assert verdict({**worse, "n_seeds": 2}, baseline="X") == "worse than X"


def test_null_cases_give_large_p_values(tmp_path):
    edits = [1, 4, 0, 7, 3, 2, 5, 1, 0, 6]
    base = counts(tmp_path, "base", edits)
    same = paired_bootstrap([base], [counts(tmp_path, "same", edits)])
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    assert verdict(same).startswith("no significant difference")
    # Swaps: one edit more on half the utterances, one fewer on the other half.
    base_edits = [e + 1 for e in edits]
    swapped = [e + (1 if k % 2 else -1) for k, e in enumerate(base_edits)]
    result = paired_bootstrap(
        [counts(tmp_path, "b2", base_edits)], [counts(tmp_path, "s2", swapped)]
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
    assert verdict(result).startswith("no significant difference")
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
    by_utterance = paired_bootstrap([base], [student])
    assert by_utterance["n_units"] == 4
    assert by_utterance["difference"] == pytest.approx(-10.0)
    assert "over 2 speakers x 1 seed (4 utterances)" in describe("a", "b", result)
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
        "95 % CI -10.00 to -10.00, p < 0.001, paired bootstrap over 20 "
        "utterances x 1 seed; lower in 1 of 1 seed): lower PER than "
        "student-baseline on these utterances, but one seed's test covers the "
        "utterances only, not the variation between trainings: seeds decide "
        "(run 3 or more)."
    )
    assert np.isclose(result["relative"], -100 / 3.5)
