"""Figures users plan with, on a paper-size teacher, for ``bench/gpu_check.py``.

Each function but ``project`` is one check, ``check(ctx, deadline) ->
figures`` (see ``bench/gpu_stages.py`` for ``ctx``). The model is tea0 as in
``hparams/teacher.yaml`` (CRDNN 2 CNN blocks of 128/256 channels, 4 x 512
bidirectional LiGRU, 2 x 512 DNN, attentional GRU decoder of 256; ``--tiny``:
the tests' sizes), the batches TIMIT-like: 8 utterances of similar length
(``sorting: ascending``), durations uniform in 1.5-4.6 s (mean 3.05 s; TIMIT's
utterances average about 3.08 s), 18-50 phones, white noise (the cost does
not depend on the content), the recipe's augmentation on.

- ``paper_teacher`` (part ``inputs``): ``train_teacher.py`` trains tea0 at
  paper size for one epoch on the check's mini corpus, so that ``save_teachers``
  has a paper-size teacher to run;
- ``step_time``: ``ASRBrain.fit_batch`` (forward, losses, backward, clipping,
  Adam step) in fp32, bf16 and fp16: seconds per step (after warm-up steps),
  peak GPU memory (``torch.cuda.max_memory_allocated``), the losses finite;
  and one validation batch (greedy search, fp32; the untrained model's search
  runs to the maximum length, so this is an upper bound);
- ``kd_step``: ``bench/kd_step.py`` on the device with the paper-size student
  (``hparams/train_kd.yaml``: tea0's architecture) and N = 10 synthetic
  teachers: the KD step over the supervised step, per strategy;
- ``save_throughput``: ``save_teachers.py --unlabelled`` with the paper-size
  teacher over the corpus and its SA1/SA2 sentences (``bench/unlabelled_cost.py``'s
  ``one_run``): audio seconds per second per teacher, labelled and unlabelled
  parts (the teacher is barely trained: its consensus hypotheses, which the
  unlabelled part is teacher-forced on, may be shorter than a trained one's);
- ``projection``: ``project`` on those figures: seconds per TIMIT epoch and
  the wall time of the whole recipe on TIMIT and of a 100-hour unlabelled
  pool, on one such GPU. These are projections, not measurements.
"""

import gc
import json
import math
import os
import signal
import statistics
import time

import kd_step
import numpy as np
import speechbrain as sb
import torch
import unlabelled_cost
from gpu_budget import CheckFailed, CheckSkipped, run_command
from speechbrain.dataio.batch import PaddedBatch

from mtkd import cluster
from mtkd.brain import ASRBrain
from mtkd.data import build_label_encoder
from mtkd.hparams import load_hparams
from mtkd.teachers import write_teacher_list
from run_demo import flags

TEACHER_FILE = "hparams/teachers/tea0.yaml"
# The size keys of tea0 (hparams/teacher.yaml) that the checks read or shrink.
SIZE_KEYS = tuple(kd_step.STUDENT_SIZES)
# --tiny: the tests' sizes (tests/conftest.py TINY_MODEL).
TINY_SIZES = {
    "cnn_blocks": 1,
    "cnn_channels": [8],
    "rnn_layers": 1,
    "rnn_neurons": 16,
    "dnn_blocks": 1,
    "dnn_neurons": 16,
    "emb_size": 8,
    "dec_neurons": 16,
    "attn_dim": 16,
}
# TIMIT-like batches (see the module doc).
BATCHES = {
    "batch_size": 8,
    "min_seconds": 1.5,
    "max_seconds": 4.6,
    "min_phones": 18,
    "max_phones": 50,
}
PRECISIONS = ("fp32", "bf16", "fp16")
# Steps per precision: warm-up, then timed; distinct batches; valid batches.
STEPS = {
    "gpu": {"warmup": 3, "timed": 20, "batches": 4, "valid_batches": 2},
    "tiny": {"warmup": 1, "timed": 2, "batches": 2, "valid_batches": 1},
}
# bench/kd_step.py options (the student's sizes are added: tea0's).
KD_STEP = {
    "gpu": {
        "teachers": (10,),
        "strategies": ("average", "best", "weighted"),
        "variants": ("disagree",),
        "steps": 4,
        "rounds": 2,
        "warmup": 1,
        "n_batches": 4,
        "component_repeats": 2,
    },
    "tiny": {
        "teachers": (10,),
        "strategies": ("weighted",),
        "variants": ("disagree",),
        "steps": 2,
        "rounds": 1,
        "warmup": 1,
        "n_batches": 2,
        "component_repeats": 1,
    },
}
KD_TEACHERS = 10
# TIMIT and the recipe, for the projections.
TIMIT = {
    "train_utterances": 3696,
    "valid_utterances": 400,
    "test_utterances": 192,
    "mean_utterance_s": 3.08,
}
RECIPE = {"teachers": 10, "epochs": 50, "batch_size": 8}
POOL_HOURS = 100.0


def size(ctx):
    return "tiny" if ctx.tiny else "gpu"


def planning_folder(ctx, *names):
    return os.path.join(ctx.out, "planning", *names)


def size_overrides(ctx):
    """Command-line overrides of tea0's sizes (none at paper size)."""
    return flags(TINY_SIZES) if ctx.tiny else []


def paper_teacher(ctx, deadline):
    """tea0 at paper size, one epoch on the mini corpus, and its list file."""
    corpus = ctx.need("inputs.corpus")["data_folder"]
    folder = planning_folder(ctx, "tea0")
    argv = [
        "train_teacher.py", TEACHER_FILE, "--data_folder", corpus,
        "--output_folder", folder, "--device", ctx.device, "--noprogressbar",
        "--number_of_epochs", "1", "--valid_beam_size", "1",
        "--test_beam_size", "1", *size_overrides(ctx),
    ]  # fmt: skip
    result = run_command(
        argv, ctx.log_file("paper_teacher"), deadline, threads=ctx.threads
    )
    if not result.ok:
        raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    list_file = planning_folder(ctx, "teachers.txt")
    write_teacher_list(list_file, [folder], "bench/gpu_check.py")
    with open(os.path.join(folder, "save", "model_config.json"), encoding="utf-8") as f:
        config = json.load(f)["model"]
    return {
        "command": "python " + " ".join(argv),
        "seconds": result.seconds,
        "cpu_s": result.cpu_s,
        "output_folder": folder,
        "teacher_list": list_file,
        "sizes": {k: config[k] for k in SIZE_KEYS},
    }


# --------------------------------------------------------------------------
# Training steps


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timit_like_batches(folder, hp, n_batches, seed=0):
    """(label encoder, [PaddedBatch]) of TIMIT-like utterances (see BATCHES)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    options = {**BATCHES, "n_batches": n_batches}
    manifest, batch_ids = kd_step.make_corpus(folder, options, rng)
    manifest_path = os.path.join(folder, "train.json")
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    label_encoder = build_label_encoder(hp, os.path.join(folder, "labels.txt"))
    data = kd_step.make_dataset(manifest_path, label_encoder)
    batches = kd_step.make_batches(data, batch_ids, PaddedBatch)
    seconds = [
        sum(manifest[u]["duration"] for u in ids) / len(ids) for ids in batch_ids
    ]
    return label_encoder, batches, seconds


def load_tea0(ctx):
    """tea0's hyperparameters (paper size; --tiny: TINY_SIZES), objects built."""
    # Its --data_folder must exist: the batches are written there.
    os.makedirs(planning_folder(ctx, "batches"), exist_ok=True)
    argv = [
        os.path.join(kd_step.REPO, TEACHER_FILE),
        "--data_folder", planning_folder(ctx, "batches"),
        "--output_folder", planning_folder(ctx, "step_time"),
        *size_overrides(ctx),
    ]  # fmt: skip
    return load_hparams(argv).hparams


def make_brain(hp, device, precision):
    brain = ASRBrain(
        modules=hp["modules"],
        opt_class=hp["opt_class"],
        hparams=hp,
        run_opts={"device": device, "precision": precision},
        checkpointer=None,
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    return brain


def time_steps(brain, batches, seconds, plan, deadline, device):
    """Warm-up then timed ``fit_batch`` calls, until the plan or the deadline:
    ({step figures}, [every step's loss])."""
    times, audio, losses = [], [], []
    total = plan["warmup"] + plan["timed"]
    for i in range(total):
        if deadline.passed():
            break
        b = i % len(batches)
        synchronize(device)
        start = time.perf_counter()
        loss = brain.fit_batch(batches[b])
        synchronize(device)
        losses.append(float(loss))
        if i >= plan["warmup"]:
            times.append(time.perf_counter() - start)
            audio.append(seconds[b])
    return {
        "steps_timed": len(times),
        "steps_planned": plan["timed"],
        "step_s_median": statistics.median(times) if times else None,
        "step_s_mean": statistics.mean(times) if times else None,
        "batch_mean_utterance_s": statistics.mean(audio) if audio else None,
        "losses_finite": all(math.isfinite(x) for x in losses),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }, losses


def time_valid_batches(brain, batches, label_encoder, n):
    """Seconds per validation batch (greedy search, eval precision fp32)."""
    brain.label_encoder = label_encoder
    brain.on_stage_start(sb.Stage.VALID, 1)
    brain.modules.eval()
    times = []
    for batch in batches[:n]:
        synchronize(str(brain.device))
        start = time.perf_counter()
        brain.evaluate_batch(batch, sb.Stage.VALID)
        synchronize(str(brain.device))
        times.append(time.perf_counter() - start)
    brain.modules.train()
    return statistics.mean(times)


def peak_memory(device):
    """(allocated, reserved) peak GPU memory in MiB since the last reset."""
    if not device.startswith("cuda"):
        return None, None
    return (
        torch.cuda.max_memory_allocated(device) / 2**20,
        torch.cuda.max_memory_reserved(device) / 2**20,
    )


def step_time(ctx, deadline):
    """Seconds per training step of tea0 in fp32, bf16 and fp16, peak GPU
    memory, and seconds per validation batch."""
    hp = load_tea0(ctx)
    plan = STEPS[size(ctx)]
    label_encoder, batches, seconds = timit_like_batches(
        planning_folder(ctx, "batches"), hp, plan["batches"]
    )
    parameters = sum(p.numel() for p in hp["model"].parameters() if p.requires_grad)
    figures = {
        "model": "tea0 (hparams/teachers/tea0.yaml)",
        "sizes": {k: hp[k] for k in SIZE_KEYS},
        "parameters": parameters,
        "batch_size": BATCHES["batch_size"],
        "batches": {
            "mean_utterance_s": [round(s, 3) for s in seconds],
            **{k: v for k, v in BATCHES.items() if k != "batch_size"},
        },
        "augment": bool(hp["augment"]),
        "precisions": {},
    }
    notes, broken = [], []
    for precision in PRECISIONS:
        if precision == "fp16" and not ctx.device.startswith("cuda"):
            figures["precisions"][precision] = {
                "skipped": "fp16 needs a CUDA GPU (the preflight refuses it on the CPU)"
            }
            notes.append("fp16 skipped: no CUDA GPU")
            continue
        if deadline.passed():
            figures["precisions"][precision] = {"skipped": "time budget spent"}
            notes.append(f"{precision} skipped: time budget spent")
            continue
        gc.collect()
        if ctx.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(ctx.device)
        brain = make_brain(hp, ctx.device, precision)
        steps, _ = time_steps(brain, batches, seconds, plan, deadline, ctx.device)
        allocated, reserved = peak_memory(ctx.device)
        steps["peak_gpu_memory_allocated_mib"] = allocated
        steps["peak_gpu_memory_reserved_mib"] = reserved
        if precision == "fp32" and not deadline.passed():
            figures["valid_batch_s"] = time_valid_batches(
                brain, batches, label_encoder, plan["valid_batches"]
            )
        if steps["steps_timed"] < plan["timed"]:
            notes.append(
                f"{precision}: {steps['steps_timed']} of {plan['timed']} steps "
                "timed (time budget spent)"
            )
        if not steps["losses_finite"]:
            broken.append(precision)
        figures["precisions"][precision] = steps
        del brain
    if not ctx.device.startswith("cuda"):
        notes.append("no GPU: peak GPU memory not measured")
    if notes:
        figures["note"] = "; ".join(notes)
    if broken:
        raise CheckFailed(f"non-finite training loss in {', '.join(broken)}", figures)
    if figures["precisions"]["fp32"].get("steps_timed", 0) == 0:
        raise CheckSkipped("time budget spent before an fp32 step was timed")
    return figures


# --------------------------------------------------------------------------
# KD step, throughput


def kd_ratio(ctx, deadline):
    """bench/kd_step.py at N = 10 on the device, paper-size student."""
    steps = ctx.figures("planning.step_time")  # a failed fp16 leaves fp32's
    step_s = steps.get("precisions", {}).get("fp32", {}).get("step_s_median")
    if step_s is None:
        raise CheckSkipped("needs an fp32 step timed by planning.step_time")
    sizes = steps["sizes"]
    options = dict(KD_STEP[size(ctx)])
    configs = len(options["strategies"])
    steps = configs * 2 * (options["warmup"] + options["rounds"] * options["steps"])
    # Steps plus the KD parts timed alone (about one forward per batch and repeat).
    estimate = 1.5 * step_s * (steps + configs * options["n_batches"]) + 10.0
    if estimate > deadline.left():
        raise CheckSkipped(
            f"time budget: about {estimate:.0f} s needed, {deadline.left():.0f} s left"
        )
    json_path = planning_folder(ctx, "kd_step.json")
    result = kd_step.run(
        **options,
        **{k: sizes[k] for k in SIZE_KEYS},
        **BATCHES,
        device=ctx.device,
        json_path=json_path,
        quiet=True,
        threads=torch.get_num_threads(),
    )
    rows = [r for r in result["rows"] if r["teachers"] == KD_TEACHERS]
    by_strategy = {
        r["strategy"]: {
            "ratio": r["ratio"],
            "ratio_iqr": r["ratio_iqr"],
            "supervised_ms": r["supervised_ms"],
            "kd_ms": r["kd_ms"],
            "ratio_from_parts": r["ratio_from_parts"],
        }
        for r in rows
    }
    worst = max(rows, key=lambda r: r["ratio"])
    return {
        "teachers": KD_TEACHERS,
        "student_parameters": result["student"]["parameters"],
        "by_strategy": by_strategy,
        "worst_strategy": worst["strategy"],
        "worst_ratio": worst["ratio"],
        "pairs_per_strategy": len(worst["pairs_ms"]),
        "json": json_path,
        "seconds": result["seconds"],
    }


def save_throughput(ctx, deadline):
    """save_teachers.py --unlabelled with the paper-size teacher: audio
    seconds per second per teacher, labelled and unlabelled parts."""
    corpus = ctx.need("inputs.corpus")
    teacher = ctx.need("inputs.paper_teacher")
    if deadline.passed():
        raise CheckSkipped("time budget spent")
    # save_teachers.main sets its own SIGUSR1/SIGTERM handlers: keep ours.
    handlers = {sig: signal.getsignal(sig) for sig in cluster.STOP_SIGNALS}
    try:
        run = unlabelled_cost.one_run(
            corpus["data_folder"],
            teacher["teacher_list"],
            corpus["unlabelled"],
            ctx.device,
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return {
        "teachers": 1,
        "labelled_audio_s": run["labelled_hours"] * 3600,
        "unlabelled_audio_s": run["unlabelled_hours"] * 3600,
        "labelled_s": run["labelled_s"],
        "unlabelled_s": run["unlabelled_s"],
        "labelled_audio_s_per_s": 3600.0 / run["labelled_s_per_hour"],
        "unlabelled_audio_s_per_s": 3600.0 / run["unlabelled_s_per_hour"],
        "note": "per teacher, loading it included; the corpus is small, so "
        "the teacher's loading weighs more than it would on TIMIT",
    }


# --------------------------------------------------------------------------
# Projections


def project(step_s, valid_batch_s, kd_ratio, labelled_audio_s_per_s,
            unlabelled_audio_s_per_s):  # fmt: skip
    """Projected wall seconds on one GPU from measured figures (pure).

    ``step_s``: seconds per training step of tea0 (batch 8, TIMIT-like);
    ``valid_batch_s``: seconds per validation batch; ``kd_ratio``: KD step /
    supervised step at N = 10 (the student has tea0's architecture);
    ``*_audio_s_per_s``: save_teachers.py's audio seconds per second per
    teacher. Any of the last three may be None: what needs it is None too.
    Returns seconds (and hours) per part; test decoding is not included.
    """
    steps = math.ceil(TIMIT["train_utterances"] / RECIPE["batch_size"])
    valid = math.ceil(TIMIT["valid_utterances"] / RECIPE["batch_size"])
    epoch_s = steps * step_s + valid * valid_batch_s
    teachers_s = RECIPE["teachers"] * RECIPE["epochs"] * epoch_s
    utterances = sum(TIMIT[f"{s}_utterances"] for s in ("train", "valid", "test"))
    audio_s = utterances * TIMIT["mean_utterance_s"]
    store_s = (
        RECIPE["teachers"] * audio_s / labelled_audio_s_per_s
        if labelled_audio_s_per_s
        else None
    )
    student_epoch_s = (
        steps * step_s * kd_ratio + valid * valid_batch_s if kd_ratio else None
    )
    student_s = RECIPE["epochs"] * student_epoch_s if kd_ratio else None
    parts = (teachers_s, store_s, student_s)
    recipe_s = sum(parts) if None not in parts else None
    pool_s = POOL_HOURS * 3600.0
    pool_utterances = pool_s / TIMIT["mean_utterance_s"]
    pool_store_s = (
        RECIPE["teachers"] * pool_s / unlabelled_audio_s_per_s
        if unlabelled_audio_s_per_s
        else None
    )
    pool_steps = math.ceil(
        (TIMIT["train_utterances"] + pool_utterances) / RECIPE["batch_size"]
    )
    pool_epoch_s = (
        pool_steps * step_s * kd_ratio + valid * valid_batch_s if kd_ratio else None
    )
    out = {
        "timit_epoch_s": epoch_s,
        "teachers_s": teachers_s,
        "store_s": store_s,
        "student_epoch_s": student_epoch_s,
        "student_s": student_s,
        "recipe_s": recipe_s,
        "pool_store_s": pool_store_s,
        "pool_student_epoch_s": pool_epoch_s,
        "pool_student_s": RECIPE["epochs"] * pool_epoch_s if kd_ratio else None,
    }
    out.update(
        {
            k.removesuffix("_s") + "_h": (v / 3600.0 if v is not None else None)
            for k, v in list(out.items())
        }
    )
    return out


def projection(ctx, deadline):
    """The recipe's wall time on TIMIT and on a 100-hour pool, projected."""
    steps = ctx.figures("planning.step_time")
    if not steps.get("precisions"):
        raise CheckSkipped("needs the step times of planning.step_time")
    notes = []
    kd = ctx.result("planning.kd_step")
    save = ctx.result("planning.save_throughput")
    ratio = kd["worst_ratio"] if kd else None
    if kd is None:
        notes.append("no KD ratio (planning.kd_step did not pass): no student figures")
    labelled = save["labelled_audio_s_per_s"] if save else None
    unlabelled = save["unlabelled_audio_s_per_s"] if save else None
    if save is None:
        notes.append("no save_teachers throughput: no store figures")
    by_precision = {}
    for precision, figures in steps["precisions"].items():
        if figures.get("step_s_median") is None:
            continue
        by_precision[precision] = project(
            figures["step_s_median"],
            steps.get("valid_batch_s", 0.0),
            ratio,
            labelled,
            unlabelled,
        )
    out = {
        "projection": True,
        "assumptions": {
            **TIMIT,
            **RECIPE,
            "pool_hours": POOL_HOURS,
            "kd_teachers": KD_TEACHERS,
            "what": "one GPU, runs one after the other; every teacher costs "
            "what tea0 costs; the student (tea0's architecture) costs tea0's "
            "step x the worst strategy's KD ratio at N = 10 (measured in fp32); "
            "validation as measured (greedy search of an untrained model: an "
            "upper bound); the store at the slower of its measured "
            "throughputs per part; test decoding and data loading in workers "
            "not included",
        },
        "kd_ratio_used": ratio,
        "by_precision": by_precision,
    }
    if notes:
        out["note"] = "; ".join(notes)
    return out
