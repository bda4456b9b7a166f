#!/usr/bin/env python3
"""The recipe checked on a CUDA GPU, and the figures users plan with, in one command.

    python bench/gpu_check.py                        # on cuda, within 8 minutes
    python bench/gpu_check.py --device cuda:1 --output_folder results/gpu_check_a100
    python bench/gpu_check.py --device cpu --tiny    # the same code, tiny (the test)

Parts (each with a time budget, ``BUDGETS_S``; a check that starts after its
part's budget, or the whole run's, is spent is skipped with a note, and a
command still running then is stopped):

- ``preflight``: ``mtkd.cluster.preflight`` on this device in fp32, bf16 and
  fp16 (on the CPU fp16 must be refused);
- ``inputs``: the quick demo's tiny mini corpus (or ``--data_folder``, a mini
  corpus made by ``tools/make_mini_timit.py``), whose SA1/SA2 sentences are
  the unlabelled audio, and tea0 trained one epoch at paper size
  (``bench/gpu_planning.py``);
- ``stages``: ``run_demo.py --quick`` and ``--quick --unlabelled`` on the
  device, ``export_model.py`` and ``transcribe.py`` (``bench/gpu_stages.py``);
- ``mixed_precision``: teachers and students trained in bf16 and fp16, the
  store written in bf16 against fp32 (``bench/gpu_precision.py``);
- ``planning``: seconds per step of a paper-size teacher in fp32, bf16 and
  fp16 with peak GPU memory, the KD step at N = 10 (``bench/kd_step.py``),
  ``save_teachers.py``'s throughput, and the projected wall time of the recipe
  on TIMIT and of a 100-hour unlabelled pool (``bench/gpu_planning.py``);
- ``tests``: the tests that need a CUDA GPU (``tests/test_cuda.py``; on a GPU
  also ``tests/test_preflight.py``).

The demos, the mixed-precision runs, the paper-size teacher and the tests run
side by side (separate processes on the one GPU); the planning figures are
measured afterwards, with the GPU to themselves.

Writes into ``--output_folder`` (default ``results/gpu_check``; a folder that
holds an earlier check is refused unless ``--overwrite``): ``gpu_check.json``
(the machine, the budgets, every check's status, seconds, note and figures;
rewritten after each check, to a temporary name and renamed), ``RESULTS.md``
(one line per check), ``gpu_check.log`` (what was printed) and ``logs/`` (one
log per command run). Exit status 0 when no check failed (skipped ones
allowed), 1 otherwise, 2 when the check cannot start (e.g. no GPU for
``--device cuda``).

``--tiny`` (for the CPU; ``--device cpu`` needs it) runs every check with
tiny models and few steps; ``tests/test_gpu_check.py`` runs it so that this
script cannot rot. ``--budget NAME=SECONDS`` changes a part's budget (or
sets one for a single check, ``part.check``), ``--skip NAME`` leaves a part or
a check out (noted in the JSON).
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import traceback

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
for _path in (REPO, BENCH):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gpu_planning  # noqa: E402
import gpu_precision  # noqa: E402
import gpu_stages  # noqa: E402
import torch  # noqa: E402
from gpu_budget import (  # noqa: E402
    CheckFailed,
    CheckSkipped,
    Deadline,
    stop_all_commands,
)
from run_all import machine as cpu_machine  # noqa: E402

from mtkd import RecipeError, cluster  # noqa: E402
from run_demo import QUICK  # noqa: E402
from tools.mini_timit import make_mini_timit  # noqa: E402
from unlabelled_prepare import TIMIT_SA  # noqa: E402

DEFAULT_OUTPUT = os.path.join(REPO, "results", "gpu_check")
JSON_FILE = "gpu_check.json"
MARKDOWN_FILE = "RESULTS.md"
PRECISIONS = ("fp32", "bf16", "fp16")
CORPUS_SEED = 1234  # run_demo.py's --corpus_seed
MINI_TIMIT_FILE = "MINI_TIMIT.json"  # what tools/mini_timit writes in a corpus
# OMP_NUM_THREADS of the commands run on a GPU machine (a few run at once;
# run_demo.py sets its own runs').
COMMAND_THREADS = 2

# Seconds per part, and for the whole run ("total"), counted from the part's
# first check. On a GPU: preflight and the corpus, then inputs, stages,
# mixed_precision and tests side by side (at most 240 s), then planning with
# the GPU to itself: 15 + 240 + 200 = 455 s at most, inside the 8 minutes.
# --tiny runs on a CPU that may be shared: its budgets only bound a run that
# hangs.
BUDGETS_S = {
    "gpu": {
        "preflight": 15,
        "inputs": 240,
        "stages": 240,
        "mixed_precision": 240,
        "tests": 240,
        "planning": 200,
        "total": 480,
    },
    "tiny": {
        "preflight": 60,
        "inputs": 1800,
        "stages": 1800,
        "mixed_precision": 1800,
        "tests": 1800,
        "planning": 1800,
        "total": 3600,
    },
}


def preflight(ctx, deadline):
    """mtkd.cluster.preflight on this device at each precision."""
    figures = {"device": ctx.device, "precisions": {}}
    for precision in PRECISIONS:
        options = {"device": ctx.device, "precision": precision}
        options["eval_precision"] = "fp32"
        try:
            cluster.preflight(options)
            figures["precisions"][precision] = "passes"
        except RecipeError as err:
            figures["precisions"][precision] = f"refused: {err}"
    on_gpu = ctx.device.startswith("cuda")
    if on_gpu:
        index = torch.device(ctx.device).index or 0
        capability = torch.cuda.get_device_capability(index)
        figures["capability"] = f"sm_{capability[0]}{capability[1]}"
        figures["arch_list"] = torch.cuda.get_arch_list()
        figures["kernels_fit"] = cluster.kernels_fit(capability, figures["arch_list"])
    expected = {p: "passes" if on_gpu or p != "fp16" else "refused" for p in PRECISIONS}
    found = {p: v.split(":")[0] for p, v in figures["precisions"].items()}
    if found != expected:
        raise CheckFailed(f"preflight {found}, expected {expected}", figures)
    if not on_gpu:
        figures["note"] = "fp16 refused on the CPU, as it should be"
    return figures


def corpus(ctx, deadline):
    """The mini corpus the checks train on: ``--data_folder`` if given, else
    the quick demo's tiny corpus, made as run_demo.py makes it. Its unlabelled
    audio is TIMIT's SA1/SA2 sentences of the training speakers (timit_sa)."""
    folder = ctx.data_folder or os.path.join(ctx.out, "inputs", "TIMIT")
    if ctx.data_folder is None:
        make_mini_timit(folder, seed=CORPUS_SEED, preset=QUICK["preset"])
    with open(os.path.join(folder, MINI_TIMIT_FILE), encoding="utf-8") as f:
        splits = json.load(f)["summary"]["splits"]
    train = splits["train"]["utterances"]
    batch = gpu_planning.RECIPE["batch_size"]
    return {
        "data_folder": folder,
        "made": ctx.data_folder is None,
        "unlabelled": TIMIT_SA,
        "utterances": {s: v["utterances"] for s, v in splits.items()},
        "audio_s": {s: v["seconds"] for s, v in splits.items()},
        "train_batches": -(-train // batch),
    }


# (part, check) -> the function that runs it.
CHECKS = {
    "preflight.device": preflight,
    "inputs.corpus": corpus,
    "inputs.paper_teacher": gpu_planning.paper_teacher,
    "stages.demo_quick": gpu_stages.demo_quick,
    "stages.demo_unlabelled": gpu_stages.demo_unlabelled,
    "stages.export": gpu_stages.export,
    "stages.transcribe": gpu_stages.transcribe,
    "mixed_precision.teachers": gpu_precision.teachers,
    "mixed_precision.store": gpu_precision.store,
    "mixed_precision.students": gpu_precision.students,
    "planning.step_time": gpu_planning.step_time,
    "planning.kd_step": gpu_planning.kd_ratio,
    "planning.save_throughput": gpu_planning.save_throughput,
    "planning.projection": gpu_planning.projection,
    "tests.cuda": gpu_stages.cuda_tests,
}
# Phases run one after the other; in a phase each lane (a tuple of checks,
# run in order) runs side by side with the others. The planning figures are
# timed last, with the device to themselves.
PHASES = (
    (("preflight.device", "inputs.corpus"),),
    (
        ("stages.demo_quick", "stages.export", "stages.transcribe"),
        ("stages.demo_unlabelled",),
        (
            "mixed_precision.teachers",
            "mixed_precision.store",
            "mixed_precision.students",
        ),
        ("inputs.paper_teacher",),
        ("tests.cuda",),
    ),
    (
        (
            "planning.step_time",
            "planning.kd_step",
            "planning.save_throughput",
            "planning.projection",
        ),
    ),
)
PARTS = tuple(dict.fromkeys(name.split(".")[0] for name in CHECKS))


class CheckContext:
    """What a check gets: the device, the mode, where to write, the log, and
    the results of the checks before it (see bench/gpu_stages.py)."""

    def __init__(self, device, tiny, out, report, data_folder=None):
        self.device, self.tiny, self.out, self.report = device, tiny, out, report
        self.data_folder = data_folder  # a mini corpus given (--data_folder)
        # Intra-op threads of each command run: several run at once.
        self.threads = 1 if tiny else COMMAND_THREADS

    def log_file(self, name):
        return os.path.join(self.out, "logs", f"{name}.log")

    def say(self, text):
        self.report.say(text)

    def result(self, name):
        """The figures of check ``name`` if it passed, else None."""
        record = self.report.checks.get(name)
        return record["figures"] if record and record["status"] == "passed" else None

    def figures(self, name):
        """The figures of check ``name`` if it ran, passed or failed (a failed
        check keeps what it measured); CheckSkipped if it did not run."""
        record = self.report.checks.get(name)
        if record is None or record["status"] == "skipped":
            raise CheckSkipped(f"needs {name}, which did not run")
        return record["figures"]

    def need(self, name):
        """The figures of check ``name``; CheckSkipped if it did not pass."""
        record = self.report.checks.get(name)
        if record is None or record["status"] != "passed":
            how = "did not run" if record is None else f"was {record['status']}"
            raise CheckSkipped(f"needs {name}, which {how}")
        return record["figures"]


class Report:
    """The run's record: every check's status and figures, written as JSON
    after each check (to a temporary name, then renamed), and the log."""

    def __init__(self, out, header):
        self.out = out
        self.header = header
        self.checks = {}
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.log = open(os.path.join(out, "gpu_check.log"), "a", encoding="utf-8")

    def say(self, text):
        line = f"{time.monotonic() - self.started:7.1f} s  {text}"
        with self.lock:
            print(line, file=sys.stderr, flush=True)
            self.log.write(line + "\n")
            self.log.flush()

    def record(self, name, record):
        with self.lock:
            self.checks[name] = record
            self.write_json()

    def data(self):
        counts = {s: 0 for s in ("passed", "failed", "skipped")}
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        for record in self.checks.values():
            counts[record["status"]] += 1
        parts = {}
        for name in CHECKS:
            if name in self.checks:
                part, check = name.split(".")
                parts.setdefault(part, {})[check] = self.checks[name]
        skipped = [
            {"check": n, "note": r["note"]}
            for n, r in self.checks.items()
            if r["status"] == "skipped"
        ]
        return {
            **self.header,
            "seconds": time.monotonic() - self.started,
            # CPU seconds (user + system) of this process and of the commands
            # it ran and waited for.
            "cpu_s": {
                "this_process": own.ru_utime + own.ru_stime,
                "commands": children.ru_utime + children.ru_stime,
            },
            "counts": counts,
            "skipped": skipped,
            "parts": parts,
        }

    def write_json(self):
        path = os.path.join(self.out, JSON_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.data(), f, indent=2, default=str)
        os.replace(path + ".tmp", path)


class Runner:
    """Runs the checks within their budgets and records them."""

    def __init__(self, ctx, budgets, skip, total):
        self.ctx, self.budgets, self.skip = ctx, budgets, set(skip)
        self.total = total
        self.part_deadlines = {}
        self.lock = threading.Lock()

    def deadline(self, name):
        """The check's deadline: its part's (counted from the part's first
        check), its own budget if --budget gave one, and the whole run's."""
        part = name.split(".")[0]
        now = time.monotonic()
        with self.lock:
            if part not in self.part_deadlines:
                self.part_deadlines[part] = now + self.budgets[part]
            at = min(self.part_deadlines[part], self.total.at)
        if name in self.budgets:
            at = min(at, now + self.budgets[name])
        return Deadline(at)

    def run(self, name):
        report = self.ctx.report
        part = name.split(".")[0]
        deadline = self.deadline(name)
        record = {"status": "skipped", "seconds": 0.0, "note": None, "figures": {}}
        record["deadline_s"] = round(deadline.left(), 1)
        start = time.monotonic()
        if name in self.skip or part in self.skip:
            record["note"] = "left out (--skip)"
        elif deadline.passed():
            own = f", {name} {self.budgets[name]:g} s" if name in self.budgets else ""
            record["note"] = (
                f"time budget spent before it started (budgets: {part} "
                f"{self.budgets[part]:g} s from the part's first check{own}, "
                f"whole run {self.budgets['total']:g} s)"
            )
        else:
            report.say(f"{name}: start ({deadline.left():.0f} s left)")
            try:
                figures = CHECKS[name](self.ctx, deadline)
                record.update(status="passed", figures=figures)
                record["note"] = figures.pop("note", None)
            except CheckSkipped as err:
                record["note"] = str(err)
            except CheckFailed as err:
                record.update(status="failed", note=str(err), figures=err.figures)
            except Exception as err:  # noqa: BLE001 - recorded: finding these is the point
                record.update(status="failed", note=f"{type(err).__name__}: {err}")
                report.say(f"{name}: {traceback.format_exc()}")
        record["seconds"] = round(time.monotonic() - start, 2)
        report.record(name, record)
        note = f": {record['note'].splitlines()[0]}" if record["note"] else ""
        report.say(f"{name}: {record['status']} in {record['seconds']:.1f} s{note}")

    def run_lane(self, lane):
        for name in lane:
            self.run(name)

    def run_phases(self):
        for phase in PHASES:
            if len(phase) == 1:
                self.run_lane(phase[0])
                continue
            threads = [
                threading.Thread(target=self.run_lane, args=(lane,), daemon=True)
                for lane in phase
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()


# --------------------------------------------------------------------------
# The machine, the summary


def gpu_machine(device):
    """The CPU side (bench/run_all.py) plus the GPU, CUDA and driver."""
    out = cpu_machine(device)
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version()
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        out["gpu"] = {
            "name": props.name,
            "capability": f"sm_{props.major}{props.minor}",
            "memory_mib": props.total_memory / 2**20,
            "multiprocessors": props.multi_processor_count,
            "visible_gpus": torch.cuda.device_count(),
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                 "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            out["nvidia_smi"] = f"not run: {err}"
    return out


def headline(name, record):
    """One short text of a check's main figures for RESULTS.md."""
    f = record["figures"]
    if record["status"] == "skipped" or not f:
        return "-"
    try:
        return HEADLINES[name](f)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "(see the JSON)"


def _training_headline(f):
    parts = []
    for p, r in f["precisions"].items():
        if isinstance(r, str):
            parts.append(f"{p} skipped")
        else:
            parts.append(
                f"{p} loss {r['first_epoch_loss']:.2f} -> {r['last_epoch_loss']:.2f} "
                f"in {r['epochs']} epochs"
            )
    return "; ".join(parts)


def _steps_headline(f):
    parts = []
    for p, r in f["precisions"].items():
        if "step_s_median" in r and r["step_s_median"] is not None:
            mem = r["peak_gpu_memory_allocated_mib"]
            mem = f", peak {mem:.0f} MiB" if mem is not None else ""
            parts.append(f"{p} {r['step_s_median']:.3f} s/step{mem}")
        else:
            parts.append(f"{p} skipped")
    return "; ".join(parts)


def _projection_headline(f):
    p = f["by_precision"].get("fp32") or next(iter(f["by_precision"].values()))
    text = f"TIMIT epoch {p['timit_epoch_s']:.0f} s"
    if p["recipe_h"] is not None:
        text += f"; recipe {p['recipe_h']:.1f} h"
    if p["pool_store_h"] is not None:
        text += f"; 100 h pool: store {p['pool_store_h']:.1f} h"
    if p["pool_student_epoch_h"] is not None:
        text += f", student epoch {p['pool_student_epoch_h']:.1f} h"
    return text + " (projection)"


HEADLINES = {
    "preflight.device": lambda f: ", ".join(
        f"{p} {v.split(':')[0]}" for p, v in f["precisions"].items()
    ),
    "inputs.corpus": lambda f: (
        f"{sum(f['utterances'].values())} utterances, pool {f['pool_utterances']}"
    ),
    "inputs.paper_teacher": lambda f: f"{f['seconds']:.0f} s",
    "stages.demo_quick": lambda f: f"{len(f['models'])} models in {f['seconds']:.0f} s",
    "stages.demo_unlabelled": lambda f: (
        f"{len(f['models'])} models in "
        f"{f['seconds']:.0f} s, {f['store_unlabelled_utterances']} unlabelled stored"
    ),
    "stages.export": lambda f: f"{len(f['files'])} files",
    "stages.transcribe": lambda f: (
        f"{f['files']} files, RTF {f['real_time_factor']:.3f}"
    ),
    "mixed_precision.teachers": _training_headline,
    "mixed_precision.students": _training_headline,
    "mixed_precision.store": lambda f: (
        f"hypotheses equal "
        f"{100 * f['all']['hypotheses_equal_fraction']:.2f} %, TV mean "
        f"{f['all']['tv_mean']:.4f}, p99 {f['all']['tv_p99']:.4f}"
    ),
    "planning.step_time": _steps_headline,
    "planning.kd_step": lambda f: (
        f"N = {f['teachers']}: worst {f['worst_ratio']:.3f}x ({f['worst_strategy']})"
    ),
    "planning.save_throughput": lambda f: (
        f"labelled "
        f"{f['labelled_audio_s_per_s']:.0f}, unlabelled "
        f"{f['unlabelled_audio_s_per_s']:.0f} audio s per s per teacher"
    ),
    "planning.projection": _projection_headline,
    "tests.cuda": lambda f: (
        f"{f['passed']} passed, {len(f['failed'])} failed, "
        f"{len(f['errors'])} errors, {len(f['skipped'])} skipped"
    ),
}


def markdown(data):
    m = data["machine"]
    gpu = m.get("gpu", {}).get("name", "no GPU")
    lines = [
        f"# GPU check: {data['device']} ({gpu})",
        "",
        f"`{data['command']}` on {m['cpu_model']} ({m['cpu_cores']} cores), "
        f"torch {m['torch']} (CUDA {m['cuda']}), SpeechBrain {m['speechbrain']}, "
        f"{data['started']}: {data['seconds']:.0f} s; {data['counts']['passed']} "
        f"passed, {data['counts']['failed']} failed, {data['counts']['skipped']} "
        "skipped. Figures of the planning part are on the models and batches "
        "that bench/gpu_planning.py describes; the projections are projections.",
        "",
        "| check | status | s | figures | note |",
        "|---|---|---:|---|---|",
    ]
    for part, checks in data["parts"].items():
        for check, record in checks.items():
            name = f"{part}.{check}"
            note = (record["note"] or "").splitlines()[0] if record["note"] else ""
            lines.append(
                f"| {name} | {record['status']} | {record['seconds']:.0f} | "
                f"{headline(name, record)} | {note.replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# The command


def parse_budgets(items, mode):
    """--budget NAME=SECONDS items -> the budgets of this mode, updated."""
    budgets = dict(BUDGETS_S[mode])
    for item in items:
        name, _, value = item.partition("=")
        if name not in budgets and name not in CHECKS:
            raise RecipeError(
                f"--budget {item}: {name!r} is neither a part ({', '.join(PARTS)}), "
                f"'total', nor a check ({', '.join(CHECKS)})."
            )
        try:
            budgets[name] = float(value)
        except ValueError:
            raise RecipeError(
                f"--budget {item}: give seconds after '=', e.g. --budget stages=300"
            ) from None
    return budgets


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", default="cuda", help="cuda (default), cuda:N or cpu"
    )
    parser.add_argument(
        "--tiny", action="store_true",
        help="tiny models and few steps (needed with --device cpu)",
    )  # fmt: skip
    parser.add_argument("--output_folder", default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--data_folder",
        help="a mini corpus made by tools/make_mini_timit.py to train on "
        "(default: the quick demo's tiny one, made in the output folder)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="remove an earlier check in --output_folder first",
    )  # fmt: skip
    parser.add_argument(
        "--budget", action="append", default=[], metavar="NAME=SECONDS",
        help=f"a part's budget ({', '.join(PARTS)}, total) or a check's "
        "(part.check); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--skip", action="append", default=[], metavar="NAME",
        help="leave out a part or a check (part.check); repeatable",
    )  # fmt: skip
    return parser.parse_args(argv)


def check_data_folder(folder):
    """--data_folder, absolute, if it is a mini corpus (None if not given)."""
    if folder is None:
        return None
    if not os.path.isfile(os.path.join(folder, MINI_TIMIT_FILE)):
        raise RecipeError(
            f"--data_folder {folder}: not a mini corpus (no {MINI_TIMIT_FILE}). "
            "The check trains a fixed number of epochs on it: give a corpus "
            "made by tools/make_mini_timit.py, or leave the option out."
        )
    return os.path.abspath(folder)


def prepare_output(folder, overwrite):
    """The output folder, new or emptied (only if it holds a check)."""
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(os.path.join(folder, JSON_FILE)):
            raise RecipeError(
                f"--output_folder {folder} is not empty and holds no "
                f"{JSON_FILE}: give a new or empty folder."
            )
        if not overwrite:
            raise RecipeError(
                f"--output_folder {folder} holds an earlier check "
                f"({JSON_FILE}): give another folder, or --overwrite to replace it."
            )
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "logs"), exist_ok=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    mode = "tiny" if args.tiny else "gpu"
    if not args.device.startswith("cuda") and not args.tiny:
        raise RecipeError(
            f"--device {args.device} needs --tiny: the full check trains "
            "paper-size models for minutes on a GPU. Use --device cuda on a GPU "
            "machine, or --device cpu --tiny to try the code paths."
        )
    budgets = parse_budgets(args.budget, mode)
    unknown = [s for s in args.skip if s not in CHECKS and s not in PARTS]
    if unknown:
        raise RecipeError(
            f"--skip {' '.join(unknown)}: not a part ({', '.join(PARTS)}) or a check."
        )
    data_folder = check_data_folder(args.data_folder)
    cluster.check_device(args.device)  # no usable GPU: stop now, with the fix
    out = os.path.abspath(args.output_folder)
    prepare_output(out, args.overwrite)
    header = {
        "check": "gpu_check",
        "command": "python bench/gpu_check.py " + " ".join(argv),
        "device": args.device,
        "mode": mode,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": gpu_machine(args.device),
        "budgets_s": budgets,
        "skip": args.skip,
        "units": {
            "_s": "seconds (wall clock)",
            "_h": "hours",
            "_mib": "MiB (2^20 bytes)",
            "_percent": "percent",
            "_audio_s_per_s": "seconds of audio per wall second",
            "ratio": "KD step time / supervised step time (same batch, paired)",
            "tv": "total variation distance, 0.5 x L1 of two distributions",
        },
    }
    report = Report(out, header)
    report.say(f"gpu_check on {args.device} ({mode}); output {out}")
    ctx = CheckContext(args.device, args.tiny, out, report, data_folder)
    runner = Runner(ctx, budgets, args.skip, Deadline.after(budgets["total"]))
    try:
        runner.run_phases()
    except KeyboardInterrupt:
        stop_all_commands()  # they run in their own sessions: Ctrl-C missed them
        raise
    data = report.data()
    report.write_json()
    path = os.path.join(out, MARKDOWN_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(markdown(data))
    os.replace(path + ".tmp", path)
    print(markdown(data))
    print(f"Written: {os.path.join(out, JSON_FILE)}, {path}, logs in {out}/logs")
    return 1 if data["counts"]["failed"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RecipeError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
