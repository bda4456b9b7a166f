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

That bootstrap cannot see how much a new training differs from the last one:
with 3 seed pairs whose differences share a sign, no replicate crosses zero
however far apart the seeds are. So every comparison also carries a
**seed-level** test on the per-seed PER differences (one number per seed
pair): a paired t-test (``paired_t_test``) and an exact sign-flip
randomisation test (``sign_flip_test``; with n pairs its p-value cannot go
below 2 / 2^n: 6 pairs are needed to reach 0.05). A verdict ("lower PER than
X") needs both the two-level bootstrap (speakers and seeds, the default) and
the seed-level t-test below 0.05 (``verdict``); anything else is "not shown",
with the reason.
"""

import itertools
import math
import re

import numpy as np

from mtkd import RecipeError
from mtkd.runs import RunFolder

BOOTSTRAP_SEED = 20201025  # fixed: the same runs always give the same result
RESAMPLES = 10000
CONFIDENCE = 0.95
SIGNIFICANCE_LEVEL = 0.05
UNITS = ("utterance", "speaker")
DEFAULT_UNIT = "speaker"  # utterances of one speaker are alike: draw speakers
# Fewer seed pairs leave a seed-level test without power: no verdict is given.
MIN_SEEDS_FOR_VERDICT = 3

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


UTTERANCES_JSON = "utterances.json"


def write_utterances(path, counts):
    """Writes the per-utterance edit counts of several runs scored on one test
    set, so that every comparison can be recomputed from the repository alone
    (``read_utterances``): ``{"ids": [utterance ids], "ref_tokens": [phones],
    "runs": {run key: [edits, in the order of ids]}}``. ``counts``: {run key:
    ``read_edit_counts`` result}; runs on another test set are an error
    naming both. Written to a temporary name, then renamed."""
    import json
    import os

    keys = list(counts)
    payload = {"ids": [], "ref_tokens": [], "runs": {}}
    if keys:
        first = counts[keys[0]]
        payload["ids"] = list(first["ids"])
        payload["ref_tokens"] = [int(n) for n in first["ref_tokens"]]
        for key in keys:
            payload["runs"][key] = [int(e) for e in _aligned_to(first, counts[key])]
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)


def read_utterances(path):
    """{run key: ``read_edit_counts``-like dict} from a ``write_utterances``
    file (``path`` of each: ``<file>#<run key>``)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        ids, refs = payload["ids"], np.asarray(payload["ref_tokens"], dtype=np.int64)
        runs = payload["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SignificanceError(
            f"{path}: not a per-utterance results file ({err}); regenerate it "
            "with the tool that wrote the RESULTS.md beside it."
        ) from None
    out = {}
    for key, edits in runs.items():
        if len(edits) != len(ids):
            raise SignificanceError(
                f"{path}: run {key} has {len(edits)} edit counts for "
                f"{len(ids)} utterances."
            )
        out[key] = {
            "path": f"{path}#{key}",
            "ids": list(ids),
            "edits": np.asarray(edits, dtype=np.int64),
            "ref_tokens": refs,
        }
    return out


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
    unit=DEFAULT_UNIT,
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
        ``resample_seeds``, and ``seed_level`` (``seed_level_tests`` of the
        per-seed differences).
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
        "seed_level": seed_level_tests(seed_differences),
    }


def _betainc(a, b, x):
    """Regularised incomplete beta function I_x(a, b), 0 <= x <= 1, by its
    continued fraction (modified Lentz), to about 1e-12."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * fraction / a


def student_t_two_sided(t, df):
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_t_test(differences):
    """Two-sided paired t-test of the mean of ``differences`` (one per seed
    pair, student minus baseline) against 0.

    Returns ``{"t", "df", "p_value"}``; ``p_value`` None (with ``t`` None)
    when fewer than 2 pairs leave no variance to test against. Differences
    all equal and non-zero give p 0 (t infinite); all zero give p 1.
    """
    values = np.asarray(differences, dtype=np.float64)
    n = len(values)
    if n < 2:
        return {"t": None, "df": max(n - 1, 0), "p_value": None}
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    if sd == 0.0:
        return {"t": math.copysign(math.inf, mean) if mean else 0.0, "df": n - 1,
                "p_value": 0.0 if mean else 1.0}  # fmt: skip
    t = mean / (sd / math.sqrt(n))
    return {"t": t, "df": n - 1, "p_value": student_t_two_sided(t, n - 1)}


def sign_flip_test(differences):
    """Exact two-sided sign-flip (randomisation) test of the mean difference:
    under "no difference" each pair's sign is a coin toss, so the p-value is
    the share of the 2^n sign patterns whose |mean| is at least the observed
    one. With n pairs it cannot go below 2 / 2^n. None for no pairs."""
    values = np.abs(np.asarray(differences, dtype=np.float64))
    n = len(values)
    if n == 0:
        return None
    observed = abs(float(np.sum(differences)))
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    sums = np.abs(signs @ values)
    # A tolerance so that the observed pattern counts itself despite rounding.
    at_least = np.count_nonzero(sums >= observed - 1e-9 * max(1.0, observed))
    return float(at_least / len(sums))


def seed_level_tests(differences):
    """The seed-level tests of one comparison: ``n`` (pairs), ``t``,
    ``t_p_value`` (paired t-test), ``sign_flip_p_value``, and ``reason``
    (why a verdict cannot rest on them, or None)."""
    t = paired_t_test(differences)
    n = len(differences)
    reason = None
    if n < MIN_SEEDS_FOR_VERDICT:
        reason = (
            f"{n} seed{'s' * (n != 1)}: a seed-level test needs at least "
            f"{MIN_SEEDS_FOR_VERDICT}; 6 for a sign-flip test to reach 0.05"
        )
    return {
        "n": n,
        "t": t["t"],
        "t_p_value": t["p_value"],
        "sign_flip_p_value": sign_flip_test(differences),
        "reason": reason,
    }


def verdict(result, level=SIGNIFICANCE_LEVEL, baseline="the baseline"):
    """ "lower PER than X" or "higher PER than X" where both the bootstrap (of
    speakers or utterances, and seeds) and the seed-level t-test give
    p < ``level``, on the same side; otherwise "not shown", with the reason.

    The bootstrap alone sees the test set's noise, not how far one training
    lands from the next (docs/results-and-significance.md): a single seed, or
    a few seeds that agree, can give it a tiny p-value that another set of
    seeds would not repeat.
    """
    seed_level = result.get("seed_level") or seed_level_tests(
        result["seed_differences"]
    )
    side = "lower" if result["difference"] < 0 else "higher"
    if result["difference"] == 0:
        return f"not shown (no difference from {baseline})"
    if seed_level["reason"]:
        why = seed_level["reason"]
    elif result["p_value"] >= level:
        why = f"bootstrap p >= {level:g}"
    elif seed_level["t_p_value"] >= level:
        why = f"seed-level t-test p = {seed_level['t_p_value']:.3f} >= {level:g}"
    else:
        return f"{side} PER than {baseline}"
    return f"not shown ({why})"


def format_p(p_value):
    """'p = 0.004', or 'p < 0.001' below what 10,000 resamples can resolve well."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def _seed_level_text(seed_level):
    """'seed-level t-test p = 0.090, sign-flip p = 0.250' (or why not)."""
    if seed_level["t_p_value"] is None:
        return "seed-level tests: need 2 or more seeds"
    return (
        f"seed-level t-test {format_p(seed_level['t_p_value'])}, sign-flip "
        f"{format_p(seed_level['sign_flip_p_value'])}"
    )


def describe(name, baseline_name, result, level=SIGNIFICANCE_LEVEL):
    """The comparison line under a results table, e.g. "weighted vs baseline:
    -1.20 PER points (-6.8 % relative; 95 % CI -2.00 to -0.40, p = 0.004,
    paired bootstrap over 24 speakers (192 utterances) and 6 seeds;
    seed-level t-test p = 0.010, sign-flip p = 0.031; lower in 6 of 6
    seeds): lower PER than baseline."."""
    relative = result["relative"]
    units = result["n_units"]
    unit = result["unit"] + ("s" if units != 1 else "")
    seeds = result["n_seeds"]
    how = f"paired bootstrap over {units} {unit}"
    if result["unit"] == "speaker":
        how += f" ({result['n_utterances']} utterances)"
    how += f" and {seeds} seed{'s' * (seeds != 1)}"
    seed_level = result.get("seed_level") or seed_level_tests(
        result["seed_differences"]
    )
    return (
        f"{name} vs {baseline_name}: {result['difference']:+.2f} PER points ("
        + ("" if relative is None else f"{relative:+.1f} % relative; ")
        + f"{round(result['confidence'] * 100):d} % CI {result['ci_low']:+.2f} to "
        f"{result['ci_high']:+.2f}, {format_p(result['p_value'])}, {how}; "
        f"{_seed_level_text(seed_level)}; lower in {result['seeds_lower']} of "
        f"{seeds} seed{'s' * (seeds != 1)}): {verdict(result, level, baseline_name)}."
    )
