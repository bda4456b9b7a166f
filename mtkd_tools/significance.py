"""Is a distilled student's test PER really different from the baseline's?

A paired bootstrap test on the per-utterance edit counts every run already
writes in its ``per_test.txt`` (SpeechBrain's ``ErrorRateStats.write_stats``
report, written by ``mtkd.brain.write_per_report``): nothing is decoded again.

The statistic is the pooled PER difference, student minus baseline, in PER
points (negative: the student makes fewer errors)::

    diff = 100 * sum_s sum_u (E_student[s, u] - E_baseline[s, u])
               / (S * sum_u N[u])

over seed pairs ``s`` (student seed i against baseline seed i, ``S`` pairs)
and test units ``u``; ``E`` is an edit count (insertions + deletions +
substitutions) and ``N[u]`` the unit's number of reference phones (the same in
every run: one test set). A unit is an utterance, or with ``unit="speaker"``
all utterances of one speaker (utterance ids are ``SPEAKER_SENTENCE``, e.g.
``MDAB0_SI1039``), which allows for utterances of one speaker being alike.

Each bootstrap replicate draws the units with replacement (one draw shared by
all seed pairs: the pairs are scored on the same utterances) and, with
``resample_seeds`` (the default, when there are 2 or more pairs), the seed
pairs too, so that the spread from one student seed to the next widens the
interval; with few seeds that part is rough (3 seeds give 10 distinct draws),
which is why the table also shows mean +- std over seeds. The 95 % interval is
the 2.5 and 97.5 percentiles of the replicates; the two-sided p-value is twice
the smaller tail of replicates on either side of zero, so p < 0.05 exactly
when the interval (nearly) excludes zero. The random generator has a fixed
seed: the same files give the same interval and p-value.
"""

import re

import numpy as np

from mtkd import RecipeError
from mtkd.runs import RunFolder

BOOTSTRAP_SEED = 20201025  # fixed: the same runs always give the same result
RESAMPLES = 10000
CONFIDENCE = 0.95
SIGNIFICANCE_LEVEL = 0.05
UNITS = ("utterance", "speaker")

# "MDAB0_SI1039, %WER 12.50 [ 4 / 32, 1 ins, 0 del, 3 sub ]"
_UTTERANCE_LINE = re.compile(
    r"^(\S+), %WER \S+ \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]"
)
# "%WER 17.76 [ 1234 / 6948, 120 ins, 300 del, 814 sub ]" (the whole test set)
_SUMMARY_LINE = re.compile(r"^%WER \S+ \[ (\d+) / (\d+),")


class SignificanceError(RecipeError):
    """Edit counts that cannot be read or compared (says which file)."""


def read_edit_counts(path):
    """Per-utterance edit counts of one run's ``per_test.txt``.

    Returns a dict with ``ids`` (list of utterance ids, file order),
    ``edits`` and ``ref_tokens`` (int64 arrays, one entry per utterance:
    insertions + deletions + substitutions, and reference phones) and
    ``path``. The counts must add up to the report's ``%WER`` summary line,
    so a truncated file is an error, not a smaller test set.
    """
    ids, edits, refs, total = [], [], [], None
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                match = _UTTERANCE_LINE.match(line)
                if match:
                    n_edits, n_ref, ins, dels, subs = map(int, match.groups()[1:])
                    if n_edits != ins + dels + subs:
                        raise SignificanceError(
                            f"{path}, line {number}: {n_edits} edits is not "
                            f"{ins} ins + {dels} del + {subs} sub; the report "
                            "is damaged: run the test again."
                        )
                    ids.append(match.group(1))
                    edits.append(n_edits)
                    refs.append(n_ref)
                elif total is None and (summary := _SUMMARY_LINE.match(line)):
                    total = (int(summary.group(1)), int(summary.group(2)))
    except OSError as err:
        raise SignificanceError(f"{path}: cannot read it ({err}).") from None
    if not ids:
        raise SignificanceError(
            f"{path}: no per-utterance lines ('ID, %WER x [ edits / phones, ... ]')."
            " Give the per_test.txt of a finished train_teacher.py or "
            "train_kd.py run (SpeechBrain's ErrorRateStats report)."
        )
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise SignificanceError(f"{path}: utterance {duplicate} is listed twice.")
    counted = (sum(edits), sum(refs))
    if total is not None and counted != total:
        raise SignificanceError(
            f"{path}: the utterance lines add up to {counted[0]} edits / "
            f"{counted[1]} phones, the summary says {total[0]} / {total[1]}: "
            "the file is incomplete; run the test again."
        )
    return {
        "path": str(path),
        "ids": ids,
        "edits": np.asarray(edits, dtype=np.int64),
        "ref_tokens": np.asarray(refs, dtype=np.int64),
    }


def run_edit_counts(folder):
    """``read_edit_counts`` of the run folder's ``per_test.txt``."""
    return read_edit_counts(RunFolder(folder).per_test_file)


def speaker_of(utterance_id):
    """'MDAB0_SI1039' -> 'MDAB0' (the whole id when it has no '_')."""
    return utterance_id.split("_", 1)[0]


def _aligned_to(reference, run):
    """``run``'s edit counts in ``reference``'s utterance order; both runs must
    be scored on the same utterances with the same references."""
    if set(reference["ids"]) != set(run["ids"]):
        only_run = sorted(set(run["ids"]) - set(reference["ids"]))
        only_ref = sorted(set(reference["ids"]) - set(run["ids"]))
        raise SignificanceError(
            f"{run['path']} and {reference['path']} are not scored on the same "
            f"test utterances (only in the first: {only_run[:3]}, only in the "
            f"second: {only_ref[:3]}). Compare runs on the same test set."
        )
    order = {utt: k for k, utt in enumerate(run["ids"])}
    take = np.array([order[utt] for utt in reference["ids"]], dtype=np.int64)
    run_refs = run["ref_tokens"][take]
    if not np.array_equal(run_refs, reference["ref_tokens"]):
        k = int(np.flatnonzero(run_refs != reference["ref_tokens"])[0])
        raise SignificanceError(
            f"{run['path']} and {reference['path']} have different references "
            f"for {reference['ids'][k]} ({run_refs[k]} vs "
            f"{reference['ref_tokens'][k]} phones): another phone set or corpus?"
        )
    return run["edits"][take]


def _units(ids, unit):
    """Index of each utterance's unit (0..n_units-1) and the number of units."""
    if unit not in UNITS:
        raise SignificanceError(f"unit={unit!r}: use one of {', '.join(UNITS)}.")
    keys = ids if unit == "utterance" else [speaker_of(utt) for utt in ids]
    names = sorted(set(keys))
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[key] for key in keys], dtype=np.int64), len(names)


def paired_bootstrap(
    baseline_runs,
    student_runs,
    unit="utterance",
    resamples=RESAMPLES,
    seed=BOOTSTRAP_SEED,
    confidence=CONFIDENCE,
    resample_seeds=True,
):
    """Paired bootstrap of the PER difference, student minus baseline.

    Arguments
    ---------
    baseline_runs, student_runs : list of dict
        ``read_edit_counts`` results, one per seed; the i-th student run is
        paired with the i-th baseline run (same length, at least one).
    unit : "utterance" or "speaker"
        What the bootstrap draws.
    resamples : int
        Bootstrap replicates.
    seed : int
        Seed of the random generator (fixed by default: reproducible).
    confidence : float
        Of the interval (0.95: the 2.5 and 97.5 percentiles).
    resample_seeds : bool
        Also draw the seed pairs with replacement (when there are 2 or more).

    Returns
    -------
    dict
        ``difference`` (PER points, pooled over seeds), ``relative`` (percent
        of the baseline's pooled PER), ``ci_low``, ``ci_high`` (PER points),
        ``p_value`` (two-sided), ``baseline_PER``, ``student_PER`` (pooled),
        ``seed_differences`` (PER points, one per pair), ``seeds_lower``
        (pairs where the student's PER is lower), ``n_seeds``, ``n_units``,
        ``n_utterances``, ``unit``, ``resamples``, ``confidence``,
        ``resample_seeds``.
    """
    if not baseline_runs or len(baseline_runs) != len(student_runs):
        raise SignificanceError(
            f"{len(student_runs)} student run(s) and {len(baseline_runs)} baseline "
            "run(s): the test pairs seed i with seed i, give as many of each "
            "(at least one)."
        )
    if resamples < 1 or not 0 < confidence < 1:
        raise SignificanceError("resamples must be >= 1 and confidence in (0, 1).")
    first = baseline_runs[0]
    unit_of, n_units = _units(first["ids"], unit)
    differences, baseline_edits = [], []
    for base, student in zip(baseline_runs, student_runs, strict=True):
        # Every run in the utterance order of the first baseline run.
        base_edits = _aligned_to(first, base)
        student_edits = _aligned_to(first, student)
        differences.append(np.bincount(unit_of, student_edits - base_edits, n_units))
        baseline_edits.append(base_edits)
    refs = np.bincount(unit_of, first["ref_tokens"], n_units).astype(np.float64)
    unit_diff = np.array(differences, dtype=np.float64)  # (seed pairs, units)
    n_seeds = len(differences)

    def per_points(edit_sum, ref_sum):
        return 100.0 * edit_sum / ref_sum

    total_refs = refs.sum() * n_seeds
    difference = per_points(unit_diff.sum(), total_refs)
    baseline_per = per_points(float(np.sum(baseline_edits)), total_refs)
    seed_differences = [per_points(row.sum(), refs.sum()) for row in unit_diff]

    rng = np.random.default_rng(seed)
    draw_seeds = resample_seeds and n_seeds > 1
    replicates = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(n_units, 1))  # bounded memory per step
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        unit_counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size)
        if draw_seeds:
            seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size)
        else:
            seed_counts = np.ones((size, n_seeds))
        edits = np.einsum("bs,su,bu->b", seed_counts, unit_diff, unit_counts)
        replicates[start : start + size] = per_points(
            edits, n_seeds * (unit_counts @ refs)
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    # Two-sided percentile p-value; replicates at exactly zero count on both
    # sides (two identical systems give p = 1).
    at_or_above = np.count_nonzero(replicates >= 0)
    at_or_below = np.count_nonzero(replicates <= 0)
    p_value = min(1.0, 2 * (1 + min(at_or_above, at_or_below)) / (resamples + 1))
    return {
        "difference": float(difference),
        "relative": float(100 * difference / baseline_per) if baseline_per else None,
        "ci_low": float(low) + 0.0,  # + 0.0: no "-0.00" in the sentence
        "ci_high": float(high) + 0.0,
        "p_value": float(p_value),
        "baseline_PER": float(baseline_per),
        "student_PER": float(baseline_per + difference),
        "seed_differences": [float(d) for d in seed_differences],
        "seeds_lower": int(sum(d < 0 for d in seed_differences)),
        "n_seeds": n_seeds,
        "n_units": n_units,
        "n_utterances": len(first["ids"]),
        "unit": unit,
        "resamples": resamples,
        "confidence": confidence,
        "resample_seeds": draw_seeds,
    }


def verdict(result, level=SIGNIFICANCE_LEVEL, baseline="the baseline"):
    """'better than the baseline' when p < ``level`` and the student's PER is
    lower, 'worse than the baseline' when p < ``level`` and it is higher, else
    'no significant difference from the baseline'.

    With one seed the bootstrap resamples utterances only, not the training's
    own variation, which the study found decisive (docs/kd_study.md): a
    significant difference is then reported as lower or higher on these
    utterances, and the verdict is left to more seeds.
    """
    significant = result["p_value"] < level and result["difference"] != 0
    if significant and result["n_seeds"] == 1:
        side = "lower" if result["difference"] < 0 else "higher"
        return (
            f"{side} PER than {baseline} on these utterances, but one seed's "
            "test covers the utterances only, not the variation between "
            "trainings: seeds decide (run 3 or more)"
        )
    if significant and result["difference"] < 0:
        return f"better than {baseline}"
    if significant:
        return f"worse than {baseline}"
    return f"no significant difference from {baseline} (p >= {level:g})"


def format_p(p_value):
    """'p = 0.004', or 'p < 0.001' below what 10,000 resamples can resolve well."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def describe(name, baseline_name, result, level=SIGNIFICANCE_LEVEL):
    """The verdict sentence under a results table, e.g. "student-best vs
    student-baseline: -1.20 PER points (-6.8 % relative; 95 % CI -2.00 to
    -0.40, p = 0.004, paired bootstrap over 192 utterances x 3 seeds; lower in
    3 of 3 seeds): better than student-baseline."."""
    relative = result["relative"]
    units = result["n_units"]
    unit = result["unit"] + ("s" if units != 1 else "")
    seeds = result["n_seeds"]
    how = f"paired bootstrap over {units} {unit} x {seeds} seed{'s' * (seeds != 1)}"
    if result["unit"] == "speaker":
        how += f" ({result['n_utterances']} utterances)"
    return (
        f"{name} vs {baseline_name}: {result['difference']:+.2f} PER points ("
        + ("" if relative is None else f"{relative:+.1f} % relative; ")
        + f"{round(result['confidence'] * 100):d} % CI {result['ci_low']:+.2f} to "
        f"{result['ci_high']:+.2f}, {format_p(result['p_value'])}, {how}; lower "
        f"in {result['seeds_lower']} of {seeds} seed{'s' * (seeds != 1)}): "
        f"{verdict(result, level, baseline_name)}."
    )
