#!/usr/bin/env python3
"""Benchmark: time of ``prepare_timit`` on a full-size TIMIT layout.

    python bench/prepare_speed.py                       # 6300 utterances, ldc + riff
    python bench/prepare_speed.py --layouts ldc --repeats 5

The corpus is the fake one of the tests (``tools/fake_timit.py``): TIMIT's
real folder layout at full size, 462 TRAIN speakers and 168 TEST speakers
(the 50 standard dev, the 24 core-test and 94 others), 10 utterances each
(SA1, SA2, 5 SX, 3 SI): 6300 utterances, each a NIST SPHERE
``.WAV`` (1024-byte header) with ``.PHN``, ``.WRD`` and ``.TXT``; the
``riff_copy`` layout adds a RIFF ``.WAV.wav`` beside every ``.WAV``. The audio
is short (``utt_samples``, 160 by default): the preparation reads only the
audio headers, so the length of the audio does not change its work.

Every repeat is a fresh preparation (a new output folder, so the skip of an
identical earlier run cannot trigger) and is timed alone; the median is
reported, and the time of the skip when the same preparation is run again. The
corpus files were just written, so they are in the page cache: the figure is
the preparation's own cost (a cold first read of a real corpus from a slow disk
adds the disk's time to read ~25 000 small files).

Importable: ``run(layouts=..., repeats=..., ...) -> dict``.
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from timit_prepare import prepare_timit  # noqa: E402
from tools.fake_timit import make_fake_timit  # noqa: E402

LAYOUTS = ("ldc", "riff_copy")
# The standard split of the full corpus (README, Stage 0).
FULL_COUNTS = {"train": 3696, "valid": 400, "test": 192}


def count_utterances(root):
    """Utterances on disk: the ``.PHN`` files under ``root``."""
    return sum(
        1 for _, _, files in os.walk(root) for f in files if f.lower().endswith(".phn")
    )


def manifest_counts(folder):
    out = {}
    for split in ("train", "valid", "test"):
        with open(os.path.join(folder, f"{split}.json"), encoding="utf-8") as f:
            out[split] = len(json.load(f))
    return out


def prepare_into(data_folder, folder, phn_set, layout):
    """One prepare_timit call writing its manifests into ``folder``; seconds."""
    start = time.perf_counter()
    prepare_timit(
        data_folder,
        os.path.join(folder, "train.json"),
        os.path.join(folder, "valid.json"),
        os.path.join(folder, "test.json"),
        phn_set=phn_set,
        layout=layout,
    )
    return time.perf_counter() - start


def time_layout(root, layout, repeats, phn_set, speakers, utt_samples):
    """Makes the fake corpus in ``layout`` under ``root`` and times preparing it."""
    data_folder = os.path.join(root, "TIMIT")
    start = time.perf_counter()
    make_fake_timit(data_folder, layout, utt_samples=utt_samples, **speakers)
    make_seconds = time.perf_counter() - start
    on_disk = count_utterances(data_folder)
    seconds = []
    for r in range(repeats):
        seconds.append(
            prepare_into(data_folder, os.path.join(root, f"out{r}"), phn_set, layout)
        )
    last = os.path.join(root, f"out{repeats - 1}")
    rerun = prepare_into(data_folder, last, phn_set, layout)
    counts = manifest_counts(last)
    listed = sum(counts.values())
    median = statistics.median(seconds)
    return {
        "layout": layout,
        "utterances_on_disk": on_disk,
        "manifest_counts": counts,
        "make_corpus_seconds": make_seconds,
        "seconds": seconds,
        "median_seconds": median,
        "utterances_on_disk_per_second": on_disk / median,
        "listed_utterances_per_second": listed / median,
        "rerun_skip_seconds": rerun,
    }


def run(
    layouts=LAYOUTS,
    repeats=3,
    workdir=None,
    full=True,
    n_train=None,
    n_dev=None,
    n_test=None,
    n_other_test=None,
    utt_samples=160,
    phn_set=39,
):
    """Runs the benchmark; returns a JSON-able dict (one entry per layout).

    ``full=False`` or the ``n_*`` speaker counts give a smaller corpus (tests).
    ``workdir``: where the corpora go (default: a temporary folder, removed).
    """
    speakers = {"full": full}
    for key, value in (
        ("n_train", n_train),
        ("n_dev", n_dev),
        ("n_test", n_test),
        ("n_other_test", n_other_test),
    ):
        if value is not None:
            speakers[key] = value
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="prepare_speed_")
    quiet = logging.getLogger("timit_prepare")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no per-run "wrote ..." lines
    started = time.perf_counter()
    try:
        results = {}
        for layout in layouts:
            root = os.path.join(workdir, layout)
            shutil.rmtree(root, ignore_errors=True)
            results[layout] = time_layout(
                root, layout, repeats, phn_set, speakers, utt_samples
            )
            shutil.rmtree(root, ignore_errors=True)
    finally:
        quiet.setLevel(level)
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    first = results[layouts[0]]
    return {
        "benchmark": "prepare_speed",
        "repeats": repeats,
        "phn_set": phn_set,
        "utt_samples": utt_samples,
        "full_size": bool(full and len(speakers) == 1),
        "standard_split": all(
            r["manifest_counts"] == FULL_COUNTS for r in results.values()
        ),
        "layouts": results,
        "median_seconds": first["median_seconds"],
        "seconds": time.perf_counter() - started,
    }


def markdown(result):
    lines = [
        "| layout | utterances on disk | listed (train/valid/test) | make corpus s "
        "| prepare s (median) | runs s | utterances/s | re-run (skip) s |",
        "|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in result["layouts"].values():
        c = r["manifest_counts"]
        runs = " ".join(f"{s:.2f}" for s in r["seconds"])
        lines.append(
            f"| {r['layout']} | {r['utterances_on_disk']} | "
            f"{c['train']}/{c['valid']}/{c['test']} | {r['make_corpus_seconds']:.1f} "
            f"| **{r['median_seconds']:.2f}** | {runs} | "
            f"{r['utterances_on_disk_per_second']:.0f} | "
            f"{r['rerun_skip_seconds']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", nargs="+", choices=("ldc", "lower", "riff_copy"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--phn_set", type=int, default=39)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(
        layouts=tuple(args.layouts or LAYOUTS),
        repeats=args.repeats,
        workdir=args.workdir,
        phn_set=args.phn_set,
    )
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
