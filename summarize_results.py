#!/usr/bin/env python3
"""The results table and plot for any set of finished runs.

    python summarize_results.py results/tea*/* results/student_*/* --out results/summary
    python summarize_results.py results/            # every run found below it

Each DIR is the output folder of a ``train_teacher.py`` or ``train_kd.py`` run,
or a folder searched (recursively) for them. Reads only what the scripts
already write (``hyperparams.yaml``, ``train_log.txt``, ``per_test.txt``,
``save/model_config.json``): real TIMIT runs, the demo's runs, any mix. Writes
``RESULTS.md``, ``results.json`` and ``valid_per.png`` to ``--out`` (default:
the current folder) and prints the table. Teachers come first, then students.

Runs of one model at several seeds (same name, from ``hyperparams.yaml``:
``teacher_name``, or ``student-<strategy>`` for ``train_kd.py``; same settings
but the seed) make one row: mean +- sample standard deviation, each seed's
value in ``results.json``. Under the table, every distilled student is tested
against ``student-baseline``: the PER difference with its 95 % confidence
interval and p-value (a paired bootstrap over the test utterances of
``per_test.txt``, seed i against seed i: ``mtkd_tools/significance.py``), and the
verdict follows from it. See docs/results-and-significance.md.

``--cost`` adds each model's checkpoint size and real-time factor on CPU, all
measured the same way in this one process (``mtkd_tools.results.add_costs``), on the
first seed of each model.
"""

import argparse
import os
import sys

from mtkd import RecipeError
from mtkd.cluster import check_device
from mtkd.writable import check_output_folder
from mtkd_tools.results import (
    BASELINE,
    COST_COLUMNS,
    PLOT_PNG,
    add_costs,
    group_runs,
    test_files,
    write_results,
)
from mtkd_tools.results import read_run as read_one_run
from mtkd_tools.significance import DEFAULT_UNIT, UNITS

RUN_FILES = ("hyperparams.yaml", "train_log.txt")


def find_runs(paths):
    """Run folders named or found below ``paths`` (those holding a train log
    and resolved hyperparameters), each once, in a stable order."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise RecipeError(f"{path}: no such folder.")
        if all(os.path.isfile(os.path.join(path, f)) for f in RUN_FILES):
            found.append(os.path.abspath(path))
            continue
        below = sorted(
            os.path.abspath(root)
            for root, _, files in os.walk(path)
            if all(f in files for f in RUN_FILES)
        )
        if not below:
            raise RecipeError(
                f"{path}: no run folder in it (a folder with {' and '.join(RUN_FILES)}"
                ", as train_teacher.py and train_kd.py write)."
            )
        found += below
    return list(dict.fromkeys(found))


def sort_key(run):
    """Teachers, then the baseline student, then the others, by name and seed."""
    return (
        run["kind"] != "teacher",
        run["name"] != BASELINE,
        run["name"],
        run["seed"] or 0,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR")
    parser.add_argument(
        "--output_folder", "--out", dest="out", default=".",
        help="where the files go (default: .; --out is the older spelling)",
    )  # fmt: skip
    parser.add_argument("--title", default="Results")
    parser.add_argument(
        "--cost", action="store_true",
        help="add checkpoint size and real-time factor (decodes test files)",
    )  # fmt: skip
    parser.add_argument("--cost_files", type=int, default=8, help="default: 8")
    parser.add_argument("--cost_repeats", type=int, default=3, help="default: 3")
    parser.add_argument("--device", default="cpu", help="for --cost (default: cpu)")
    parser.add_argument(
        "--bootstrap_unit", choices=UNITS, default=DEFAULT_UNIT,
        help="what the bootstrap resamples with the seeds (default: speaker, "
        "all utterances of a speaker together; utterance: narrower intervals "
        "that treat a speaker's utterances as independent)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_output_folder(args.out)  # before any run is read or decoded
    if args.cost:
        check_device(args.device)
    runs = [read_one_run(folder) for folder in find_runs(args.dirs)]
    runs.sort(key=sort_key)
    columns = ()
    if args.cost:
        files = test_files(runs[0], args.cost_files)
        first_seeds = [group["runs"][0] for group in group_runs(runs)]
        add_costs(first_seeds, files, args.device, args.cost_repeats)
        columns = COST_COLUMNS
    text = write_results(
        runs, args.out, args.title, extra_columns=columns, unit=args.bootstrap_unit
    )
    print(text)
    print(f"Written: {args.out}/RESULTS.md, results.json, {PLOT_PNG}")


if __name__ == "__main__":
    try:
        main()
    except RecipeError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
