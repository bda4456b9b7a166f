"""Mixed precision on the device, for ``bench/gpu_check.py``.

Each function is one check, ``check(ctx, deadline) -> figures`` (see
``bench/gpu_stages.py`` for ``ctx``), run one after the other on the check's
mini corpus (``inputs.corpus``: the quick demo's tiny corpus; its SA1/SA2
sentences are the unlabelled audio):

- ``teachers``: ``train_teacher.py`` (tea0 at the demo's CPU size, width 96;
  ``--tiny``: the quick demo's width 24) in bf16 and in fp16 side by side, with
  the demo's training settings, for ``TEACHER_EPOCHS`` epochs of 6 batches of 8
  (on a GPU 40 epochs: 240 optimiser steps). Passes when every epoch's mean
  training loss is finite, no batch's loss was non-finite (SpeechBrain's
  warning), and the last epoch's mean training loss is at most ``LOSS_FALL``
  times the first epoch's;
- ``store``: ``save_teachers.py --unlabelled`` over those teachers in fp32 and
  in bf16, side by side, and the two stores compared (``compare_stores``):
  passes when the greedy CTC hypotheses are equal on at least
  ``HYPOTHESES_EQUAL`` of the (teacher, utterance) pairs and the teacher-forced
  distributions are within ``TV_MEAN_MAX`` / ``TV_P99_MAX`` (total variation
  distance per output position, mean and 99th percentile);
- ``students``: ``train_kd.py --strategy weighted`` (the demo's student, width
  64; ``--tiny``: 16) on the fp32 store, in bf16 and in fp16, judged as the
  teachers.

fp16 needs a CUDA GPU: on the CPU (``--tiny``) its runs are skipped, with
that note in the figures.
"""

import math
import os

import numpy as np
import torch
from gpu_budget import CheckFailed, CheckSkipped, Command, run_commands

from mtkd.store import TeacherStore
from mtkd.store.format import UNLABELLED
from mtkd.teachers import write_teacher_list
from mtkd_tools.results import log_line_values
from run_demo import (
    DEMO,
    KD_SETTINGS,
    QUICK,
    QUICK_SETTINGS,
    SHARED_SETTINGS,
    STUDENT_SETTINGS,
    flags,
    student_sizes,
    teacher_sizes,
)

TRAIN_PRECISIONS = ("bf16", "fp16")
STORE_PRECISIONS = ("fp32", "bf16")  # reference first
TEACHER_EPOCHS = {"gpu": 40, "tiny": 3}
STUDENT_EPOCHS = {"gpu": 40, "tiny": 3}
# Training "falls": last epoch's mean training loss <= LOSS_FALL x the first's.
LOSS_FALL = 0.9
# bf16 store against fp32: the tolerances this check states.
HYPOTHESES_EQUAL = 0.99  # share of (teacher, utterance) CTC hypotheses equal
TV_MEAN_MAX = 0.02  # mean total variation distance per distribution row
TV_P99_MAX = 0.10  # its 99th percentile
# What SpeechBrain logs when a batch's loss is not finite.
NONFINITE_MARKERS = ("Patience not yet exhausted", "Loss is not finite")
FP16_ON_CPU = "skipped: fp16 needs a CUDA GPU (the preflight refuses it on the CPU)"


def size(ctx):
    return "tiny" if ctx.tiny else "gpu"


def precision_folder(ctx, name):
    return os.path.join(ctx.out, "mixed_precision", name)


def runnable(ctx, precisions):
    """(precisions to run, {precision: skip note}) on ctx.device."""
    if ctx.device.startswith("cuda"):
        return list(precisions), {}
    return [p for p in precisions if p != "fp16"], {
        p: FP16_ON_CPU for p in precisions if p == "fp16"
    }


def epoch_losses(train_log):
    """Mean training loss of each epoch in a run's train_log.txt, in order."""
    losses = {}
    if not os.path.isfile(train_log):
        return []
    with open(train_log, encoding="utf-8") as f:
        for line in f:
            values = log_line_values(line)
            if "epoch" in values and "train loss" in values:
                losses[int(float(values["epoch"]))] = float(values["train loss"])
    return [losses[k] for k in sorted(losses)]


def nonfinite_warnings(*logs):
    """How many lines of the given log files warn of a non-finite loss."""
    count = 0
    for path in logs:
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                count += sum(any(m in line for m in NONFINITE_MARKERS) for line in f)
    return count


def training_verdict(losses, nonfinite):
    """Figures and verdict of one training run from its epoch losses.

    ``losses``: mean training loss per epoch; ``nonfinite``: warnings of a
    non-finite batch loss. Returns a dict with ``passed`` and the reasons.
    """
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    ratio = losses[-1] / losses[0] if finite and losses[0] > 0 else None
    falls = ratio is not None and len(losses) >= 2 and ratio <= LOSS_FALL
    return {
        "epochs": len(losses),
        "epoch_train_loss": losses,
        "first_epoch_loss": losses[0] if losses else None,
        "last_epoch_loss": losses[-1] if losses else None,
        "last_over_first": ratio,
        "finite": finite,
        "nonfinite_batch_warnings": nonfinite,
        "loss_falls": falls,
        "passed": finite and nonfinite == 0 and falls,
    }


def train_runs(ctx, deadline, name, argv_for):
    """Runs ``argv_for(precision, folder)`` for each training precision side
    by side; returns {precision: figures} (fp16 on the CPU: a skip note)."""
    todo, figures = runnable(ctx, TRAIN_PRECISIONS)
    commands, folders = {}, {}
    for p in todo:
        folders[p] = precision_folder(ctx, f"{name}_{p}")
        commands[p] = Command(
            argv_for(p, folders[p]), ctx.log_file(f"{name}_{p}"), threads=ctx.threads
        )
    results = dict(zip(todo, run_commands(commands.values(), deadline), strict=True))
    for p, result in results.items():
        losses = epoch_losses(os.path.join(folders[p], "train_log.txt"))
        nonfinite = nonfinite_warnings(result.log, os.path.join(folders[p], "log.txt"))
        verdict = training_verdict(losses, nonfinite)
        verdict.update(
            output_folder=folders[p],
            command="python " + " ".join(result.argv),
            seconds=result.seconds,
            cpu_s=result.cpu_s,
            optimiser_steps_per_epoch=ctx.need("inputs.corpus")["train_batches"],
            ended=result.describe(),
        )
        if not result.ok and not result.stopped_at_deadline:
            verdict["passed"] = False
        figures[p] = verdict
    failed = [p for p in todo if not figures[p]["passed"]]
    out = {"precisions": figures, "loss_fall_required": LOSS_FALL}
    skipped = [f"{p} {note}" for p, note in figures.items() if isinstance(note, str)]
    if skipped:
        out["note"] = "; ".join(skipped)
    if failed:
        raise CheckFailed(
            "; ".join(
                f"{p}: finite {figures[p]['finite']}, non-finite batches "
                f"{figures[p]['nonfinite_batch_warnings']}, last/first epoch loss "
                f"{figures[p]['last_over_first']} (at most {LOSS_FALL} required); "
                f"{figures[p]['ended']}"
                for p in failed
            ),
            out,
        )
    return out


# The quick demo's training settings (lr 0.003, test beam 2).
COMMON_SETTINGS = {**SHARED_SETTINGS, **QUICK_SETTINGS}


def teachers(ctx, deadline):
    """tea0 trained in bf16 and in fp16: finite, falling losses."""
    corpus = ctx.need("inputs.corpus")["data_folder"]
    width = (QUICK if ctx.tiny else DEMO)["teacher_width"]
    settings = {
        **COMMON_SETTINGS,
        **teacher_sizes("tea0", width),
        "number_of_epochs": TEACHER_EPOCHS[size(ctx)],
    }

    def argv(precision, folder):
        return [
            "train_teacher.py", "hparams/teachers/tea0.yaml",
            "--data_folder", corpus, "--output_folder", folder,
            "--device", ctx.device, "--precision", precision, "--noprogressbar",
            *flags(settings),
        ]  # fmt: skip

    return train_runs(ctx, deadline, "teacher", argv)


def _quantile(values, q):
    return float(np.quantile(values, q)) if len(values) else None


def compare_stores(reference, other):
    """Two stores of the same teachers and corpus, e.g. fp32 and bf16.

    Per split (train, valid, test, unlabelled): utterances, (teacher,
    utterance) pairs of greedy CTC hypotheses and how many are equal, and the
    teacher-forced distributions' total variation distance per output
    position (0.5 x L1 over the labels; mean, 99th percentile, max) and
    largest absolute difference of one probability. On the unlabelled split
    the distributions are compared where both stores chose the same consensus
    (teacher-forced on the same labels). ``all`` sums the splits.
    """
    a, b = TeacherStore(reference), TeacherStore(other)
    try:
        if sorted(a.splits) != sorted(b.splits):
            raise CheckFailed(f"the stores hold other splits: {a.splits}, {b.splits}")
        splits, all_tv = {}, []
        for split in a.splits:
            ids = a.utterance_ids(split)
            pairs = equal = same_reference = 0
            tv, max_abs = [], 0.0
            for utt_id in ids:
                x, y = a.get(split, utt_id), b.get(split, utt_id)
                for hx, hy in zip(x["ctc_hyps"], y["ctc_hyps"], strict=True):
                    pairs += 1
                    equal += bool(torch.equal(hx, hy))
                if split == UNLABELLED and not torch.equal(
                    a.pseudo_reference(utt_id), b.pseudo_reference(utt_id)
                ):
                    continue
                same_reference += 1
                diff = (x["att_dist"] - y["att_dist"]).abs()  # [N, L+1, V]
                tv.append(0.5 * diff.sum(dim=-1).flatten())
                max_abs = max(max_abs, float(diff.max()))
            rows = torch.cat(tv).numpy() if tv else np.zeros(0)
            all_tv.append(rows)
            splits[split] = {
                "utterances": len(ids),
                "hypothesis_pairs": pairs,
                "hypotheses_equal": equal,
                "utterances_with_distributions_compared": same_reference,
                "distribution_rows": int(rows.size),
                "tv_mean": float(rows.mean()) if rows.size else None,
                "tv_p99": _quantile(rows, 0.99),
                "tv_max": float(rows.max()) if rows.size else None,
                "max_abs_probability_diff": max_abs,
            }
    finally:
        a.close()
        b.close()
    rows = np.concatenate(all_tv)
    pairs = sum(s["hypothesis_pairs"] for s in splits.values())
    equal = sum(s["hypotheses_equal"] for s in splits.values())
    return {
        "splits": splits,
        "all": {
            "hypothesis_pairs": pairs,
            "hypotheses_equal": equal,
            "hypotheses_equal_fraction": equal / pairs if pairs else None,
            "distribution_rows": int(rows.size),
            "tv_mean": float(rows.mean()) if rows.size else None,
            "tv_p99": _quantile(rows, 0.99),
            "tv_max": float(rows.max()) if rows.size else None,
            "max_abs_probability_diff": max(
                s["max_abs_probability_diff"] for s in splits.values()
            ),
        },
    }


def store(ctx, deadline):
    """save_teachers.py in fp32 and in bf16 over the trained teachers."""
    corpus = ctx.need("inputs.corpus")
    # Every teacher that trained with finite losses, whatever the verdict on
    # its loss curve (one diverging precision leaves the other to store).
    trained = ctx.figures("mixed_precision.teachers").get("precisions", {})
    folders = [
        f["output_folder"]
        for f in trained.values()
        if isinstance(f, dict) and f["epochs"] > 0 and f["finite"]
    ]
    if not folders:
        raise CheckSkipped(
            "needs a teacher that mixed_precision.teachers trained with finite losses"
        )
    list_file = precision_folder(ctx, "teachers.txt")
    write_teacher_list(list_file, folders, "bench/gpu_check.py")
    commands = {}
    for p in STORE_PRECISIONS:
        argv = [
            "save_teachers.py", "hparams/save_teachers.yaml",
            "--data_folder", corpus["data_folder"], "--tea_models_dir", list_file,
            "--output_folder", precision_folder(ctx, f"store_{p}"),
            "--device", ctx.device, "--precision", p, "--noprogressbar",
            "--unlabelled", corpus["unlabelled"],
        ]  # fmt: skip
        commands[p] = Command(argv, ctx.log_file(f"store_{p}"), threads=ctx.threads)
    results = run_commands(commands.values(), deadline)
    for result in results:
        if not result.ok:
            raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    stores = [
        os.path.join(precision_folder(ctx, f"store_{p}"), "store")
        for p in STORE_PRECISIONS
    ]
    comparison = compare_stores(*stores)
    overall = comparison["all"]
    figures = {
        "teachers": len(folders),
        "teacher_list": list_file,
        "reference": STORE_PRECISIONS[0],
        "compared": STORE_PRECISIONS[1],
        "stores": dict(zip(STORE_PRECISIONS, stores, strict=True)),
        "seconds": {
            p: r.seconds for p, r in zip(STORE_PRECISIONS, results, strict=True)
        },
        "cpu_s": {p: r.cpu_s for p, r in zip(STORE_PRECISIONS, results, strict=True)},
        "tolerance": {
            "hypotheses_equal_fraction_min": HYPOTHESES_EQUAL,
            "tv_mean_max": TV_MEAN_MAX,
            "tv_p99_max": TV_P99_MAX,
        },
        **comparison,
    }
    problems = []
    if overall["hypotheses_equal_fraction"] < HYPOTHESES_EQUAL:
        problems.append(
            f"hypotheses equal on {overall['hypotheses_equal_fraction']:.4f} of "
            f"the pairs (at least {HYPOTHESES_EQUAL} required)"
        )
    if overall["tv_mean"] > TV_MEAN_MAX or overall["tv_p99"] > TV_P99_MAX:
        problems.append(
            f"distributions: total variation mean {overall['tv_mean']:.4f}, 99th "
            f"percentile {overall['tv_p99']:.4f} (at most {TV_MEAN_MAX} and "
            f"{TV_P99_MAX})"
        )
    if problems:
        raise CheckFailed("bf16 store against fp32: " + "; ".join(problems), figures)
    return figures


def students(ctx, deadline):
    """The demo's student distilled from the fp32 store in bf16 and in fp16."""
    corpus = ctx.need("inputs.corpus")["data_folder"]
    store_folder = precision_folder(ctx, "store_fp32")
    if not os.path.isfile(os.path.join(store_folder, "store_summary.json")):
        raise CheckSkipped("needs the fp32 store of mixed_precision.store")
    width = (QUICK if ctx.tiny else DEMO)["student_width"]
    settings = {
        **COMMON_SETTINGS,
        **STUDENT_SETTINGS,
        **student_sizes(width),
        **KD_SETTINGS,
        "number_of_epochs": STUDENT_EPOCHS[size(ctx)],
    }

    def argv(precision, folder):
        return [
            "train_kd.py", "hparams/train_kd.yaml",
            "--data_folder", corpus, "--output_folder", folder,
            "--device", ctx.device, "--precision", precision, "--noprogressbar",
            "--strategy", "weighted",
            "--tea_infer_dir", os.path.join(store_folder, "store"),
            *flags(settings),
        ]  # fmt: skip

    return train_runs(ctx, deadline, "student", argv)
