#!/usr/bin/env python3
"""Benchmark: what the unlabelled part costs save_teachers.py per audio hour.

    python bench/unlabelled_cost.py --data_folder D --teachers teachers.txt \\
        --unlabelled D/POOL --repeats 3

Runs ``save_teachers.main`` with ``--unlabelled`` ``--repeats`` times, each
into a fresh output folder, in this process. In each run it times the two
paths side by side: ``write_store`` (the labelled parts: train, valid and
test, teacher-forced on the references) and ``write_unlabelled_part`` (every
teacher on the unlabelled audio: greedy hypotheses, their consensus, teacher
forcing on it). Each time is divided by its audio hours; the figure is the
median over runs of the ratio unlabelled / labelled seconds per audio hour
(issue 23's goal: at most 1.05). The two paths run on different utterances
of the same kind (the mini corpus's pool is synthesised as its training
speakers are), so a ratio near 1 means the consensus costs nothing extra.

Writes ``--out`` (JSON): every run's times and hours, and the medians.

``--scores`` (issue 32) measures instead what the leave-one-out teacher
scores and the per-utterance disagreement add to the unlabelled path. The
labelled parts are written once (timed), then each repeat writes the
unlabelled part twice, side by side in alternating order: as shipped, and
with ``unlabelled_scores`` replaced by a stub that computes nothing (the
path before issue 32: the medoid and the PERs against it). Figures, medians
over repeats: the unlabelled path's time with / without the scores, and the
whole ``save_teachers.py --unlabelled`` run's time per audio hour with /
without them (the labelled parts + the unlabelled part; goal: at most
1.05), each on two clocks: wall time, and this process's CPU time, which
other jobs on a shared machine change far less (one torch thread, data
loaded in the process). Also the time spent inside ``unlabelled_scores``
itself in the runs with the scores, as a share of the unlabelled part and of
the whole run without them: the difference the ratios estimate, measured
directly. Default ``--out``: ``bench/unlabelled_scores_cost.json``.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import mtkd.teachers  # noqa: E402
import save_teachers  # noqa: E402
from mtkd.store.format import unlabelled_part_files  # noqa: E402


@contextlib.contextmanager
def timed(owner, name, into):
    """Adds the wall time of every ``owner.name`` call to ``into[name]``, and
    this process's CPU time (all its threads) to ``into[name + "_cpu"]``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - start
            cpu_key = name + "_cpu"
            into[cpu_key] = into.get(cpu_key, 0.0) + time.process_time() - cpu

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def hours(manifest):
    with open(manifest, encoding="utf-8") as f:
        return sum(float(e["duration"]) for e in json.load(f).values()) / 3600.0


def one_run(data_folder, teachers, unlabelled, device):
    out = tempfile.mkdtemp(prefix="unlabelled_cost_")
    times = {}
    try:
        with (
            timed(save_teachers, "write_store", times),
            timed(save_teachers, "write_unlabelled_part", times),
        ):
            save_teachers.main(
                [os.path.join(REPO, "hparams/save_teachers.yaml"),
                 "--data_folder", data_folder, "--tea_models_dir", teachers,
                 "--output_folder", out, "--device", device, "--noprogressbar",
                 "--unlabelled", unlabelled]
            )  # fmt: skip
        labelled_h = sum(hours(os.path.join(out, f"{s}.json")) for s in
                         ("train", "valid", "test"))  # fmt: skip
        unlabelled_h = hours(os.path.join(out, "unlabelled.json"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    labelled = times["write_store"] / labelled_h
    unlabelled_cost = times["write_unlabelled_part"] / unlabelled_h
    return {
        "labelled_s": times["write_store"],
        "labelled_hours": labelled_h,
        "unlabelled_s": times["write_unlabelled_part"],
        "unlabelled_hours": unlabelled_h,
        "labelled_s_per_hour": labelled,
        "unlabelled_s_per_hour": unlabelled_cost,
        "ratio": unlabelled_cost / labelled,
    }


@contextlib.contextmanager
def without_scores():
    """``consensus_targets`` without the leave-one-out scores and the
    disagreement: ``unlabelled_scores`` replaced by a stub returning arrays
    of the right shapes (NaN scores) and computing nothing."""
    original = mtkd.teachers.unlabelled_scores

    def stub(distances, hyps, att_hyps, chosen, priority=None):
        b, n = len(hyps), len(hyps[0])
        nan = np.full((b, n), np.nan, dtype=np.float32)
        return {
            "loo_teacher": np.full((b, n), -1, dtype=np.int32),
            "loo_ctc_per": nan,
            "loo_att_per": nan.copy(),
            "disagreement": np.full(b, np.nan, dtype=np.float32),
        }

    mtkd.teachers.unlabelled_scores = stub
    try:
        yield
    finally:
        mtkd.teachers.unlabelled_scores = original


def scores_runs(data_folder, teachers, unlabelled, device, repeats):
    """``--scores``: the labelled parts once (timed: the rest of a
    ``save_teachers.py --unlabelled`` run), then per repeat the unlabelled
    part with and without the scores, in alternating order. Returns (the
    setting, the runs): each run has, per clock (``wall``, ``cpu``: this
    process's CPU time), the unlabelled part's seconds with and without the
    scores and the two ratios (``compare``)."""
    out = tempfile.mkdtemp(prefix="unlabelled_scores_cost_")
    argv = [
        os.path.join(REPO, "hparams/save_teachers.yaml"), "--data_folder",
        data_folder, "--tea_models_dir", teachers, "--output_folder", out,
        "--device", device, "--noprogressbar",
    ]  # fmt: skip
    labelled, runs = {}, []
    try:
        with timed(save_teachers, "write_store", labelled):
            save_teachers.main(argv)
        for r in range(repeats):
            order = ("with", "without") if r % 2 == 0 else ("without", "with")
            times = {}
            for variant in order:
                for part in unlabelled_part_files(os.path.join(out, "store")):
                    os.remove(part)
                one = {}
                if variant == "without":
                    scores = without_scores()
                else:  # the time spent in the scores themselves, too
                    scores = timed(mtkd.teachers, "unlabelled_scores", one)
                with scores, timed(save_teachers, "write_unlabelled_part", one):
                    save_teachers.main([*argv, "--unlabelled", unlabelled])
                times[variant] = one
            runs.append({"order": list(order), "times": times})
        labelled_h = sum(hours(os.path.join(out, f"{s}.json")) for s in
                         ("train", "valid", "test"))  # fmt: skip
        unlabelled_h = hours(os.path.join(out, "unlabelled.json"))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    setting = {
        "labelled_s": labelled["write_store"],
        "labelled_cpu_s": labelled["write_store_cpu"],
        "labelled_hours": labelled_h,
        "unlabelled_hours": unlabelled_h,
    }
    clocks = (("wall", "", setting["labelled_s"]),
              ("cpu", "_cpu", setting["labelled_cpu_s"]))  # fmt: skip
    key = "write_unlabelled_part"
    for run in runs:
        times = run.pop("times")
        for clock, suffix, rest in clocks:
            run[clock] = compare(
                times["with"][key + suffix], times["without"][key + suffix], rest,
                labelled_h + unlabelled_h,
            )  # fmt: skip
            # Direct: the seconds spent computing the scores, against the
            # path and the whole run without them.
            spent = times["with"]["unlabelled_scores" + suffix]
            run[clock]["scores_s"] = spent
            run[clock]["scores_share_unlabelled"] = (
                spent / times["without"][key + suffix]
            )
            run[clock]["scores_share_whole"] = spent / (
                rest + times["without"][key + suffix]
            )
    return setting, runs


def compare(with_s, without_s, labelled_s, total_hours):
    """One repeat on one clock: the unlabelled part's seconds with and
    without the scores, their ratio, and the ratio of the whole
    ``save_teachers.py --unlabelled`` run's seconds per audio hour (the
    labelled parts' ``labelled_s`` added to both)."""
    whole_with = (labelled_s + with_s) / total_hours
    whole_without = (labelled_s + without_s) / total_hours
    return {
        "unlabelled_s_with_scores": with_s,
        "unlabelled_s_without_scores": without_s,
        "unlabelled_ratio": with_s / without_s,
        "whole_s_per_hour_with_scores": whole_with,
        "whole_s_per_hour_without_scores": whole_without,
        "whole_ratio": whole_with / whole_without,
    }


def main_scores(args):
    """``--scores``: the repeats, their medians per clock, the JSON file."""
    setting, runs = scores_runs(
        args.data_folder, args.teachers, args.unlabelled, args.device, args.repeats
    )
    median = {
        clock: {
            key: statistics.median(r[clock][key] for r in runs)
            for key in runs[0][clock]
        }
        for clock in ("cpu", "wall")
    }
    result = {
        "command": " ".join(["python", "bench/unlabelled_cost.py", *sys.argv[1:]]),
        "threads": args.threads,
        "teachers": args.teachers,
        **setting,
        "runs": runs,
        "median": median,
    }
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    for clock, m in median.items():
        print(
            f"{clock}: the unlabelled part with / without the scores, median "
            f"ratio {m['unlabelled_ratio']:.3f}; the whole save_teachers.py "
            f"--unlabelled run per audio hour: {m['whole_ratio']:.3f}; the "
            f"scores' own time: +{100 * m['scores_share_unlabelled']:.2f} % of "
            f"the unlabelled part, +{100 * m['scores_share_whole']:.2f} % of "
            f"the whole run ({len(runs)} repeats)"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--teachers", required=True, help="teacher list file")
    parser.add_argument("--unlabelled", required=True, help="unlabelled source")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scores", action="store_true",
        help="what the leave-one-out scores and the disagreement add (issue 32)",
    )  # fmt: skip
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out is None:
        name = "unlabelled_scores_cost.json" if args.scores else "unlabelled_cost.json"
        args.out = os.path.join(REPO, "bench", name)
    if args.scores:
        main_scores(args)
        return
    runs = [
        one_run(args.data_folder, args.teachers, args.unlabelled, args.device)
        for _ in range(args.repeats)
    ]
    result = {
        "command": " ".join(["python", "bench/unlabelled_cost.py", *sys.argv[1:]]),
        "threads": args.threads,
        "teachers": args.teachers,
        "runs": runs,
        "median": {
            key: statistics.median(r[key] for r in runs)
            for key in ("labelled_s_per_hour", "unlabelled_s_per_hour", "ratio")
        },
    }
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    m = result["median"]
    print(
        f"labelled {m['labelled_s_per_hour']:.1f} s per audio hour, unlabelled "
        f"{m['unlabelled_s_per_hour']:.1f} s: ratio {m['ratio']:.3f} (median of "
        f"{len(runs)})"
    )


if __name__ == "__main__":
    main()
