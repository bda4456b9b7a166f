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

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import save_teachers  # noqa: E402


@contextlib.contextmanager
def timed(owner, name, into):
    """Adds the wall time of every ``owner.name`` call to ``into[name]``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - start

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--teachers", required=True, help="teacher list file")
    parser.add_argument("--unlabelled", required=True, help="unlabelled source")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=os.path.join(REPO, "bench/unlabelled_cost.json")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
