#!/usr/bin/env python3
"""Benchmark: the mini corpus generator's time per synthesiser.

    python bench/corpus_speed.py                      # tiny preset, 5 repeats
    python bench/corpus_speed.py --preset demo_core --repeats 3
    python bench/corpus_speed.py --synthesisers espeak flite both

Makes the same corpus (``tools/make_mini_timit.py``'s ``make_mini_timit``:
same preset, seed and speakers) once per synthesiser per repeat, each into a
fresh folder, side by side in one run: in each repeat the synthesisers take
turns, the order reversed every other repeat, so that a change in the
machine's load falls on all of them. Each corpus is timed whole (planning,
synthesis and alignment in its worker processes, resampling, noise, writing
the files) with ``--num_workers`` synthesis processes (default 1: one core,
the figure least disturbed by other work on a small machine). Reported per
synthesiser: the wall seconds and the CPU seconds (user + system, of this
process and of the synthesis processes), the audio made, and both per minute
of audio; medians over the repeats, and the median over repeats of each
synthesiser's figure per audio minute over eSpeak NG's in the same repeat
(``vs_espeak`` for the wall time, ``cpu_vs_espeak`` for the CPU time: on a
machine shared with other work the CPU time is the stable figure, the wall
time depends on what else runs; the load average before each corpus is
recorded too).

Writes ``--out`` (default ``bench/corpus_speed.json``; written to a temporary
name and renamed): the machine, the options, every repeat and the medians.
Importable: ``run(...) -> dict``.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mtkd_tools.machine import cpu_model  # noqa: E402
from tools.mini_timit import SYNTHESISERS, MiniTimitError, make_mini_timit  # noqa: E402
from tools.mini_timit.flite import flite_missing  # noqa: E402

DEFAULT_OUT = os.path.join(REPO, "bench", "corpus_speed.json")


def machine():
    """CPU model, cores, load average and the commit, for the record."""
    cpu = cpu_model()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "commit": commit,
    }


def cpu_seconds():
    """User + system CPU seconds of this process and its finished children
    (the synthesis processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_one(root, synthesiser, options, num_workers):
    """Makes one corpus under ``root``: its wall and CPU seconds, its audio."""
    out = os.path.join(root, synthesiser)
    load = round(os.getloadavg()[0], 2)
    cpu = cpu_seconds()
    start = time.perf_counter()
    summary = make_mini_timit(
        out, synthesiser=synthesiser, num_workers=num_workers, **options
    )
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    shutil.rmtree(out)
    audio_min = summary["total_seconds"] / 60.0
    return {
        "wall_s": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "audio_s": summary["total_seconds"],
        "utterances": summary["total_utterances"],
        "s_per_audio_min": round(seconds / audio_min, 3),
        "cpu_s_per_audio_min": round(cpu / audio_min, 3),
        "load_average_1min_before": load,
    }


def run(
    synthesisers=("espeak", "flite"), repeats=5, preset="tiny", seed=1234,
    num_workers=1, train_speakers=None, dev_speakers=None, test_speakers=None,
    sx_per_speaker=5, si_per_speaker=3,
):  # fmt: skip
    """Times the generator for each synthesiser, ``repeats`` times in turn."""
    unknown = [s for s in synthesisers if s not in SYNTHESISERS]
    if unknown:
        raise MiniTimitError(
            f"synthesisers {unknown}: use some of {', '.join(SYNTHESISERS)}"
        )
    if any(s != "espeak" for s in synthesisers) and flite_missing():
        raise MiniTimitError(f"Flite is needed: {flite_missing()}")
    options = {
        "seed": seed, "preset": preset, "train_speakers": train_speakers,
        "dev_speakers": dev_speakers, "test_speakers": test_speakers,
        "sx_per_speaker": sx_per_speaker, "si_per_speaker": si_per_speaker,
    }  # fmt: skip
    runs = {s: [] for s in synthesisers}
    order_log = []
    before = machine()
    root = tempfile.mkdtemp(prefix="corpus_speed_")
    try:
        for r in range(repeats):
            order = list(synthesisers) if r % 2 == 0 else list(synthesisers)[::-1]
            order_log.append(order)
            for synthesiser in order:
                runs[synthesiser].append(
                    time_one(root, synthesiser, options, num_workers)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {
        s: {
            key: statistics.median(r[key] for r in rs)
            for key in (
                "wall_s",
                "cpu_s",
                "audio_s",
                "s_per_audio_min",
                "cpu_s_per_audio_min",
            )  # fmt: skip
        }
        for s, rs in runs.items()
    }
    paired = {}
    if "espeak" in medians:
        # Each synthesiser against eSpeak NG within the same repeat (the same
        # minutes of the machine's load), then the median of those ratios:
        # the figure a changing load disturbs least.
        for s, m in medians.items():
            for key in ("s_per_audio_min", "cpu_s_per_audio_min"):
                ratios = [
                    round(a[key] / b[key], 3)
                    for a, b in zip(runs[s], runs["espeak"], strict=True)
                ]
                name = "vs_espeak" if key == "s_per_audio_min" else "cpu_vs_espeak"
                paired.setdefault(s, {})[name] = ratios
                m[name] = statistics.median(ratios)
    return {
        "command": None,
        "date": datetime.date.today().isoformat(),
        "machine": before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "options": {**options, "num_workers": num_workers, "repeats": repeats},
        "order": order_log,
        "runs": runs,
        "vs_espeak_per_repeat": paired,
        "median": medians,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--synthesisers", nargs="+", default=["espeak", "flite"],
        metavar="{espeak,flite,both}",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        result = run(
            args.synthesisers, args.repeats, args.preset, args.seed, args.num_workers
        )
    except MiniTimitError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    result["command"] = " ".join(["python", "bench/corpus_speed.py", *(argv or [])])
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    for s, m in result["median"].items():
        ratio = (
            f" ({m['vs_espeak']:.2f}x and {m['cpu_vs_espeak']:.2f}x eSpeak NG's)"
            if "vs_espeak" in m
            else ""
        )
        print(
            f"{SYNTHESISERS[s]}: median {m['wall_s']:.1f} s wall, "
            f"{m['cpu_s']:.1f} s CPU for {m['audio_s'] / 60:.2f} min of audio: "
            f"{m['s_per_audio_min']:.2f} s wall and {m['cpu_s_per_audio_min']:.2f} "
            f"s CPU per audio minute{ratio}, {args.repeats} repeats"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
