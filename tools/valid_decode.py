#!/usr/bin/env python3
"""Score finished runs on **valid** with their test decoding, to choose on valid.

During training a run's valid PER is its selection metric (greedy CTC in the
demo and the study), while its test PER comes from the joint CTC/attention
beam. Choosing a configuration by test PER would be choosing on test. This
tool gives every finished run a valid PER from the same decoding as its test:
it copies the run folder, re-runs the run's own command (``demo_command.txt``)
there with ``--test_annotation <copy>/valid.json --skip_prep true``, so the
kept checkpoint is loaded, nothing is trained (the epoch counter is at its
end), and the copy's ``per_test.txt`` scores the valid utterances. The
original folder is not touched.

``--annotation`` decodes another manifest instead of each run's valid set,
for example the test sentences of the study's corpus spoken by another
synthesiser (docs/mini-corpus.md). Its ``wav`` paths are resolved against
``--annotation_root`` (a copy with ``{data_root}`` replaced is written to the
output folder), else against each run's ``--data_folder``.

    python tools/valid_decode.py --out results/valid_decode --baseline baseline \\
        results/kd_study30/students/*/seed*

Run folders named ``.../<configuration>/seed<N>`` are grouped by
configuration. It writes ``RESULTS.md`` in ``--out``: every configuration's
valid PER (mean ± std over seeds, and each seed), and each configuration
against ``--baseline`` (or only the pairs given with ``--pair CONFIGURATION
BASELINE``; paired bootstrap over the valid utterances, seed i with seed i,
as ``summarize_results.py`` does on test), and every run's
edits per utterance in ``utterances.json``. Decodings already done are not
redone.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mtkd import RecipeError  # noqa: E402
from mtkd.hparams import run_stage  # noqa: E402
from mtkd.runs import RunFolder  # noqa: E402
from mtkd_tools.results import atomic_write  # noqa: E402
from mtkd_tools.significance import (  # noqa: E402
    describe,
    paired_bootstrap,
    read_edit_counts,
    write_utterances,
)


class ValidDecodeError(RecipeError):
    """A run that cannot be decoded on valid (not finished, no command)."""


def configuration_and_seed(folder):
    """'.../best-T2/seed0' -> ('best-T2', 'seed0'); '.../tea0' -> ('tea0', '')."""
    folder = os.path.abspath(folder)
    name = os.path.basename(folder)
    if name.startswith("seed"):
        return os.path.basename(os.path.dirname(folder)), name
    return name, ""


def valid_command(folder, copy, annotation=None):
    """The run's own command, writing to ``copy`` and testing on its valid set
    (or on the manifest ``annotation``)."""
    command_file = os.path.join(folder, "demo_command.txt")
    if not os.path.isfile(RunFolder(folder).per_test_file):
        raise ValidDecodeError(
            f"{folder} has no per_test.txt: the run has not finished. Finish it "
            "(run its command again) or leave it out."
        )
    if not os.path.isfile(command_file):
        raise ValidDecodeError(
            f"{folder} has no demo_command.txt (written by run_demo.py and "
            "tools/kd_study.py), so its command is unknown. Give runs made by "
            "those, or decode valid yourself: your command with --test_annotation "
            "<run folder>/valid.json in a copy of the run folder."
        )
    with open(command_file) as f:
        argv = shlex.split(f.read().strip())
    if argv[:1] == ["python"]:
        argv = [sys.executable, *argv[1:]]
    if "--output_folder" not in argv:
        raise ValidDecodeError(f"{command_file}: the command has no --output_folder")
    argv[argv.index("--output_folder") + 1] = copy
    # The run's valid manifest: its own --valid_annotation (a run on manifests
    # made elsewhere, e.g. the study's oracle), else the one in its folder.
    valid = os.path.join(copy, "valid.json")
    if "--valid_annotation" in argv:
        valid = argv[argv.index("--valid_annotation") + 1]
    if annotation:
        valid = annotation
    if "--test_annotation" in argv:
        argv[argv.index("--test_annotation") + 1] = valid
    else:
        argv += ["--test_annotation", valid]
    if "--skip_prep" in argv:
        return argv
    return argv + ["--skip_prep", "true"]


def decode_valid(folder, out, annotation=None):
    """Copy ``folder`` to ``out/<configuration>/<seed>`` and score valid (or
    ``annotation``) there.

    Returns the copy's path; a copy that already has its per_test.txt is kept.
    """
    config, seed = configuration_and_seed(folder)
    copy = os.path.join(out, config, seed) if seed else os.path.join(out, config)
    if os.path.isfile(RunFolder(copy).per_test_file):
        return copy
    argv = valid_command(folder, copy, annotation)
    partial = copy + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(folder, partial)
    os.remove(RunFolder(partial).per_test_file)
    shutil.rmtree(copy, ignore_errors=True)
    os.rename(partial, copy)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = os.path.join(copy, "valid_decode.log")
    with open(log, "w") as f:
        proc = subprocess.run(
            argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode != 0 or not os.path.isfile(RunFolder(copy).per_test_file):
        raise ValidDecodeError(f"decoding valid for {folder} failed; see {log}")
    return copy


def resolved_annotation(annotation, root, out):
    """A copy of the manifest ``annotation`` in ``out`` with ``{data_root}``
    in its wav paths replaced by ``root``; returns the copy's path."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ValidDecodeError(f"--annotation_root {root}: no such folder")
    with open(annotation, encoding="utf-8") as f:
        entries = json.load(f)
    for entry in entries.values():
        entry["wav"] = entry["wav"].replace("{data_root}", root)
    os.makedirs(out, exist_ok=True)
    copy = os.path.join(out, os.path.basename(annotation))
    atomic_write(copy, json.dumps(entries, indent=1) + "\n")
    return copy


def edit_counts(copies):
    """{configuration: {seed: ``read_edit_counts``}} of decoded copies."""
    scores = {}
    for copy in copies:
        config, seed = configuration_and_seed(copy)
        scores.setdefault(config, {})[seed] = read_edit_counts(
            RunFolder(copy).per_test_file
        )
    return scores


def comparisons(scores, baselines=(), pairs=()):
    """(configuration, baseline) pairs to test, in order: each of ``pairs``
    as given, then every configuration of ``scores`` against each of
    ``baselines`` (a pair already listed, either way round, is not repeated).
    A configuration named in ``pairs`` must be in ``scores``."""
    for config, baseline in pairs:
        for name in (config, baseline):
            if name not in scores:
                raise ValidDecodeError(
                    f"--pair {config} {baseline}: no run folder of {name} among "
                    f"the runs ({', '.join(scores)}). Give its folders too, or "
                    "fix the name."
                )
    out = [tuple(pair) for pair in pairs]
    for baseline in baselines:
        for config in scores:
            if config == baseline or {(config, baseline), (baseline, config)} & set(
                out
            ):
                continue
            out.append((config, baseline))
    return out


def summary(scores, baselines, label="valid PER (test decoding)", pairs=()):
    """Markdown: ``label``'s PER per configuration of ``scores``
    (``edit_counts``), and each of ``comparisons(scores, baselines, pairs)``,
    seed with seed (the seeds both have)."""
    lines = [
        f"| model | seeds | {label} | per seed |",
        "|---|---|---|---|",
    ]
    for config, by_seed in scores.items():
        pers = [
            100.0 * r["edits"].sum() / r["ref_tokens"].sum() for r in by_seed.values()
        ]
        spread = f" ± {statistics.stdev(pers):.2f}" if len(pers) > 1 else ""
        lines.append(
            f"| {config} | {len(pers)} | {statistics.fmean(pers):.2f}{spread} | "
            + " / ".join(f"{p:.2f}" for p in pers) + " |"
        )  # fmt: skip
    lines.append("")
    for config, baseline in comparisons(scores, baselines, pairs):
        base, by_seed = scores.get(baseline, {}), scores[config]
        seeds = [s for s in by_seed if s in base]
        if not seeds:
            continue
        result = paired_bootstrap([base[s] for s in seeds], [by_seed[s] for s in seeds])
        lines.append(f"- {describe(config, baseline, result)}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_FOLDER")
    parser.add_argument(
        "--output_folder", "--out", dest="out", required=True,
        help="where the copies go (--out is the older spelling)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="a configuration every other is tested against, seed with seed "
        "(repeat the option for several)",
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("CONFIGURATION", "BASELINE"),
        help="test this configuration against this baseline only, seed with "
        "seed (repeat for several; with --baseline, both sets of lines)",
    )
    parser.add_argument(
        "--annotation",
        help="decode this manifest (JSON, as timit_prepare.py writes) instead "
        "of each run's valid set",
    )
    parser.add_argument(
        "--annotation_root",
        help="the corpus folder that --annotation's {data_root} stands for",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    annotation = args.annotation and os.path.abspath(args.annotation)
    if annotation and not os.path.isfile(annotation):
        raise ValidDecodeError(
            f"--annotation {args.annotation}: no such file. Give a manifest "
            "written by timit_prepare.py (DATA_FOLDER OUT_DIR writes "
            "OUT_DIR/test.json)."
        )
    if args.annotation_root:
        if not annotation:
            raise ValidDecodeError("--annotation_root needs --annotation")
        annotation = resolved_annotation(annotation, args.annotation_root, out)
    for folder in args.runs:  # every error before any decoding
        valid_command(os.path.abspath(folder), out, annotation)
    named = {configuration_and_seed(folder)[0] for folder in args.runs}
    comparisons(dict.fromkeys(named), pairs=args.pair)
    with ThreadPoolExecutor(args.jobs) as pool:
        copies = list(
            pool.map(
                lambda f: decode_valid(os.path.abspath(f), out, annotation),
                args.runs,
            )
        )
    label = (
        f"PER on {os.path.basename(annotation)} (test decoding)"
        if annotation
        else "valid PER (test decoding)"
    )
    scores = edit_counts(copies)
    text = summary(scores, args.baseline, label, pairs=args.pair)
    atomic_write(os.path.join(out, "RESULTS.md"), text)
    # Every run's edits per utterance, so that each figure can be recomputed.
    write_utterances(
        os.path.join(out, "utterances.json"),
        {
            "/".join(filter(None, (config, seed))): counts
            for config, by_seed in scores.items()
            for seed, counts in by_seed.items()
        },
    )
    print(text, end="")


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
