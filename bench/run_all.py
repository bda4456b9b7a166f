#!/usr/bin/env python3
"""All the benchmarks of the recipe in one run: figures, goals, met or not.

    python bench/run_all.py                # full run (~20 min on a 2-core VM)
    python bench/run_all.py --quick        # smoke run (~2-3 min)
    python bench/run_all.py --data_folder /path/to/TIMIT --teachers teachers.txt

Four benchmarks run side by side in this process:

1. ``store_size``: bytes of the teacher store per teacher per hour of audio,
   against the original recipe's per-batch float32 layout written on the same
   data and teachers (goal: at least 10x smaller);
2. ``kd_step``: time of a KD training step over the plain supervised step at
   N = 1, 10, 100 teachers, each KD step paired with a supervised step on the
   same batch (goal: at most 1.05x at N = 10 and 1.5x at N = 100, for every
   strategy);
3. ``save_throughput``: ``save_teachers.py``'s audio seconds per second per
   teacher and the share of its time not spent in teacher forward passes;
4. ``prepare_speed``: ``prepare_timit`` on a full-size TIMIT layout (6300
   utterances).

Without ``--data_folder`` / ``--teachers`` it makes what they need under
``--workdir`` (default ``bench/work/``, kept for the next run): a mini corpus
(``tools/mini_timit``, preset ``tiny`` with ``--quick``, else ``demo``) and two
small teachers (tea0 and tea3, shrunk to test size for ``--quick``, to the
README's CPU size otherwise, 1-2 epochs: the benchmarks measure cost, not
accuracy) trained by ``train_teacher.py`` in subprocesses.

Threads: ``--threads`` (default 1) is set as ``OMP_NUM_THREADS`` (for this
process, before torch loads, and the subprocesses) and
``torch.set_num_threads``: on a small shared machine one thread is the stable
setting (README, Troubleshooting).

Writes ``--out`` (default ``bench/results.json``: machine, options, per
benchmark its figures, repeats, medians, goal and met) and ``--md`` (default
``bench/RESULTS.md``: the table), both atomically, and prints the table.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
for _path in (REPO, BENCH):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from mtkd_tools.machine import cpu_model  # noqa: E402

DEFAULT_JSON = os.path.join(BENCH, "results.json")
DEFAULT_MD = os.path.join(BENCH, "RESULTS.md")
DEFAULT_WORKDIR = os.path.join(BENCH, "work")
BENCHMARKS = ("store_size", "kd_step", "save_throughput", "prepare_speed")

# Goals of issue 5.
STORE_GOAL = 10.0  # original layout bytes / store bytes, at least
KD_GOALS = {10: 1.05, 100: 1.5}  # KD step / supervised step, at most

# Teachers made when none are given (two different architectures).
TEACHER_CONFIGS = ("hparams/teachers/tea0.yaml", "hparams/teachers/tea3.yaml")
# tests/conftest.py TINY_MODEL: any teacher config at test size.
TINY_SIZES = [
    "--cnn_blocks", "1", "--cnn_channels", "[8]", "--rnn_layers", "1",
    "--rnn_neurons", "16", "--dnn_blocks", "1", "--dnn_neurons", "16",
    "--emb_size", "8", "--dec_neurons", "16", "--attn_dim", "16",
]  # fmt: skip
# README "CPU-sized runs".
CPU_SIZES = [
    "--cnn_blocks", "1", "--cnn_channels", "[16]", "--rnn_layers", "2",
    "--rnn_neurons", "128", "--dnn_blocks", "1", "--dnn_neurons", "128",
    "--emb_size", "32", "--dec_neurons", "128", "--attn_dim", "64",
]  # fmt: skip

# What each mode runs. kd_step: options of bench/kd_step.run.
MODES = {
    "quick": {
        "preset": "tiny",
        "teacher_args": [*TINY_SIZES, "--number_of_epochs", "1"],
        "store_batch_size": 8,
        "kd_step": {
            "teachers": (1, 10, 100),
            "strategies": ("average", "weighted"),
            "variants": ("disagree",),
            "steps": 2,
            "rounds": 1,
            "warmup": 1,
            "n_batches": 2,
            "component_repeats": 1,
        },
        "save_repeats": 3,
        "prepare": {"layouts": ("ldc",), "repeats": 3},
    },
    "full": {
        "preset": "demo",
        "teacher_args": [*CPU_SIZES, "--number_of_epochs", "2", "--lr", "0.001"],
        "store_batch_size": 8,
        "kd_step": {
            "teachers": (1, 10, 100),
            "strategies": ("average", "best", "weighted"),
            "variants": ("disagree",),
            "steps": 6,
            "rounds": 3,
            "warmup": 1,
            "n_batches": 4,
            "component_repeats": 3,
        },
        "save_repeats": 3,
        "prepare": {"layouts": ("ldc", "riff_copy"), "repeats": 5},
    },
}
TEACHER_RUN = ["--batch_size", "8", "--test_beam_size", "2"]
TEACHER_RECORD = "teacher.json"  # the command, checkpoint and time of a run


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Inputs: a corpus and teachers, made when not given


def make_teacher(config, data_folder, out, extra, threads):
    """Trains one teacher; returns (model.ckpt path, training seconds, reused).

    Cached: reused when ``out`` holds a finished run of the same command (its
    ``teacher.json``); anything else in ``out`` is removed and trained again.
    """
    argv = [
        "train_teacher.py", config, "--data_folder", os.path.abspath(data_folder),
        "--output_folder", out, "--device", "cpu", "--noprogressbar",
        *TEACHER_RUN, *extra,
    ]  # fmt: skip
    record_file = os.path.join(out, TEACHER_RECORD)
    if os.path.isfile(record_file):
        with open(record_file, encoding="utf-8") as f:
            record = json.load(f)
        if record.get("argv") == argv and os.path.isfile(record.get("ckpt", "")):
            return record["ckpt"], record["seconds"], True
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"training {config} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    ckpt = proc.stdout.strip().splitlines()[-1]
    if not os.path.isfile(ckpt):
        raise RuntimeError(f"train_teacher.py printed no checkpoint path: {ckpt!r}")
    seconds = time.perf_counter() - start
    record = {"argv": argv, "ckpt": ckpt, "seconds": seconds}
    write_atomic(record_file, json.dumps(record, indent=2) + "\n")
    return ckpt, seconds, False


def make_inputs(args, mode):
    """(data_folder, teacher list file, what was made) for the run."""
    made = {"data_folder": args.data_folder, "teachers": args.teachers}
    if args.teachers and not args.data_folder:
        raise SystemExit("--teachers needs --data_folder (the corpus they were for)")
    workdir = os.path.abspath(args.workdir)
    data_folder = args.data_folder
    if data_folder is None:
        from tools.mini_timit import make_mini_timit

        data_folder = os.path.join(workdir, f"mini_{mode['preset']}", "TIMIT")
        log(f"mini corpus ({mode['preset']}): {data_folder}")
        reused = os.path.isdir(data_folder)
        start = time.perf_counter()
        make_mini_timit(data_folder, seed=1234, preset=mode["preset"])
        made["mini_corpus"] = {
            "preset": mode["preset"],
            "path": data_folder,
            "seconds": time.perf_counter() - start,
            "reused": reused,
        }
    teachers = args.teachers
    if teachers is None:
        tag = "quick" if args.quick else "full"
        if args.data_folder:  # teachers for a given corpus: their own folder
            digest = hashlib.sha1(os.path.abspath(data_folder).encode()).hexdigest()
            tag += "_" + digest[:8]
        folder = os.path.join(workdir, f"teachers_{tag}")
        lines, seconds, reused = [], {}, []
        for config in TEACHER_CONFIGS:
            name = os.path.splitext(os.path.basename(config))[0]
            log(f"teacher {name}: {os.path.join(folder, name)}")
            ckpt, seconds[name], was_there = make_teacher(
                config,
                data_folder,
                os.path.join(folder, name),
                mode["teacher_args"],
                args.threads,
            )
            lines.append(ckpt)
            if was_there:
                reused.append(name)
        teachers = os.path.join(folder, "teachers.txt")
        with open(teachers, "w", encoding="utf-8") as f:
            f.write("# made by bench/run_all.py\n" + "\n".join(lines) + "\n")
        made["teacher_training"] = {
            "configs": list(TEACHER_CONFIGS),
            "overrides": TEACHER_RUN + mode["teacher_args"],
            "seconds": seconds,  # training time, of an earlier run when reused
            "reused": reused,
            "list": teachers,
        }
    return data_folder, teachers, made


# --------------------------------------------------------------------------
# Machine


def _memory_gib():
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{head}{' (modified)' if dirty else ''}" if head else None
    except OSError:
        return None


def machine(device):
    import speechbrain
    import torch

    cuda = torch.cuda.is_available()
    if str(device).startswith("cuda") and cuda:
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = "cpu" + ("" if cuda else " (no GPU)")
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
        "device": device,
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": load,
        "git_commit": _git_commit(),
    }


# --------------------------------------------------------------------------
# Figures, goals and the table (pure functions: tested with made-up figures)


def judge(value, op, target):
    """True when ``value op target`` holds (op ">=" or "<="); None if no value."""
    if value is None:
        return None
    if op == ">=":
        return bool(value >= target)
    if op == "<=":
        return bool(value <= target)
    raise ValueError(f"unknown comparison {op!r}")


def row(benchmark, figure, value, text, goal=None, met=None):
    return {
        "benchmark": benchmark,
        "figure": figure,
        "value": value,
        "text": text,
        "goal": goal,
        "met": met,
    }


def summarise_store(result):
    """store_size.run's result -> entry (figures, goal, met, table rows)."""
    ratio = result["ratio"]
    exact = result["targets_vs_unpadded_original"]
    padded = result["targets_vs_padded_original"]
    met = judge(ratio, ">=", STORE_GOAL)
    same = exact["hyp_equal"] == exact["pairs"] and exact["att_max_abs_diff"] <= 1e-3
    mb = 1e6
    rows = [
        row(
            "store_size",
            "store, MB per teacher-hour of audio",
            result["store_bytes_per_teacher_hour"] / mb,
            f"{result['store_bytes_per_teacher_hour'] / mb:.2f}",
        ),
        row(
            "store_size",
            "original per-batch float32 layout, MB per teacher-hour",
            result["original_bytes_per_teacher_hour"] / mb,
            f"{result['original_bytes_per_teacher_hour'] / mb:.2f}",
        ),
        row(
            "store_size",
            "original / store",
            ratio,
            f"{ratio:.1f}x",
            f">= {STORE_GOAL:.0f}x",
            met,
        ),
        row(
            "store_size",
            "stored targets = unpadded original's (hypotheses, distributions)",
            exact["hyp_equal"] / max(exact["pairs"], 1),
            f"{exact['hyp_equal']}/{exact['pairs']}, max diff "
            f"{exact['att_max_abs_diff']:.1e}",
            "all",
            bool(same),
        ),
    ]
    return {
        "figures": {
            "teachers": result["teachers"],
            "hours": result["hours"],
            "batch_size": result["batch_size"],
            "store_bytes": result["store_bytes"],
            "original_bytes": result["original_bytes"],
            "store_bytes_per_teacher_hour": result["store_bytes_per_teacher_hour"],
            "original_bytes_per_teacher_hour": result[
                "original_bytes_per_teacher_hour"
            ],
            "ratio": ratio,
            "targets_vs_unpadded_original": exact,
            "padded_original_hypotheses_equal": f"{padded['hyp_equal']}/"
            f"{padded['pairs']}",
        },
        "repeats": 1,
        "repeats_note": "byte counts are deterministic: one run",
        "medians": {"ratio": ratio},
        "goal": f"store at least {STORE_GOAL:.0f}x smaller than the original layout",
        "met": met,
        "rows": rows,
    }


def summarise_kd(result):
    """kd_step.run's result -> entry; goals judged on the worst strategy of
    disagreeing teachers (every strategy must meet them)."""
    rows, goals, figures = [], {}, {}
    by_n = {}
    for r in result["rows"]:
        key = f"N{r['teachers']} {r['variant']} {r['strategy']}"
        figures[key] = {
            k: r[k]
            for k in (
                "ratio",
                "ratio_cpu",
                "ratio_from_parts",
                "ratio_iqr",
                "supervised_ms",
                "kd_ms",
            )
            if k in r
        }
        if r["variant"] == "disagree":
            by_n.setdefault(r["teachers"], []).append(r)
    pairs = 0
    for n in sorted(by_n):
        judged = by_n[n]
        worst = max(judged, key=lambda r: r["ratio"])
        pairs = max(pairs, len(worst.get("pairs_ms", [])))
        goal = KD_GOALS.get(n)
        met = judge(worst["ratio"], "<=", goal) if goal else None
        per = ", ".join(f"{r['strategy']} {r['ratio']:.3f}" for r in judged)
        goals[f"N{n}"] = {
            "goal": goal,
            "worst_strategy": worst["strategy"],
            "worst_ratio": worst["ratio"],
            "ratios": {r["strategy"]: r["ratio"] for r in judged},
            "met": met,
        }
        rows.append(
            row(
                "kd_step",
                f"KD step / supervised step, N = {n} (worst strategy; {per})",
                worst["ratio"],
                f"{worst['ratio']:.3f}x ({worst['strategy']})",
                f"<= {goal:.2f}x" if goal else None,
                met,
            )
        )
    judged_goals = [g["met"] for g in goals.values() if g["met"] is not None]
    return {
        "figures": figures,
        "repeats": pairs,
        "repeats_note": "paired (KD, supervised) steps per configuration",
        "medians": {k: g["worst_ratio"] for k, g in goals.items()},
        "goal": "KD step at most "
        + ", ".join(f"{g:.2f}x at N = {n}" for n, g in KD_GOALS.items())
        + " (every strategy, teachers that disagree)",
        "goals": goals,
        "met": all(judged_goals) if judged_goals else None,
        "rows": rows,
    }


def summarise_save(result):
    m = result["median"]
    rows = [
        row(
            "save_throughput",
            "audio s per wall s per teacher (whole save_teachers run)",
            m["throughput"],
            f"{m['throughput']:.1f}",
        ),
        row(
            "save_throughput",
            "share of wall time not in teacher forward passes",
            m["share_not_forward"],
            f"{m['share_not_forward']:.3f}",
        ),
    ]
    if m.get("share_not_forward_in_write_part") is not None:
        rows.append(
            row(
                "save_throughput",
                "same, within the loop over batches (write_part)",
                m["share_not_forward_in_write_part"],
                f"{m['share_not_forward_in_write_part']:.3f}",
            )
        )
    return {
        "figures": {
            k: result[k]
            for k in ("teachers", "audio_seconds", "utterances", "batch_size")
        }
        | {"runs": result["runs"]},
        "repeats": result["repeats"],
        "medians": m,
        "goal": None,
        "met": None,
        "rows": rows,
    }


def summarise_prepare(result):
    rows = []
    for layout, r in result["layouts"].items():
        c = r["manifest_counts"]
        rows.append(
            row(
                "prepare_speed",
                f"prepare_timit s, {layout} layout, {r['utterances_on_disk']} "
                f"utterances ({c['train']}/{c['valid']}/{c['test']} listed)",
                r["median_seconds"],
                f"{r['median_seconds']:.2f} s",
            )
        )
    return {
        "figures": result["layouts"],
        "repeats": result["repeats"],
        "medians": {k: r["median_seconds"] for k, r in result["layouts"].items()},
        "goal": None,
        "met": None,
        "rows": rows,
    }


def store_details(result):
    """A few lines on the store's make-up and the padded original layout."""
    parts = result["store_dataset_bytes"]
    total = sum(parts.values()) or 1
    padded = result["targets_vs_padded_original"]
    big = {k: v for k, v in parts.items() if v >= 0.01 * total}
    made_up = ", ".join(
        f"{k} {v / 1e6:.2f} MB ({100 * v / total:.0f} %)"
        for k, v in sorted(big.items(), key=lambda kv: -kv[1])
    )
    made_up += f", {len(parts) - len(big)} others under 1 % each"
    return (
        f"{result['teachers']} teachers, {result['hours']:.3f} h of audio, batch "
        f"{result['batch_size']}: store {result['store_bytes'] / 1e6:.2f} MB, "
        f"original layout {result['original_bytes'] / 1e6:.2f} MB. Store datasets: "
        f"{made_up}. The original padded layout gives the stored hypothesis for "
        f"{padded['hyp_equal']} of {padded['pairs']} (utterance, teacher) pairs "
        "(padding changes the others)."
    )


SUMMARISE = {
    "store_size": summarise_store,
    "kd_step": summarise_kd,
    "save_throughput": summarise_save,
    "prepare_speed": summarise_prepare,
}


def table(rows):
    """Markdown table: benchmark, figure, measured, goal, met."""
    lines = [
        "| benchmark | figure | measured | goal | met |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['benchmark']} | {r['figure']} | {r['text']} | "
            f"{r['goal'] or '-'} | {met} |"
        )
    return "\n".join(lines)


def all_rows(results):
    return [r for name in BENCHMARKS for r in results["benchmarks"].get(name, {})
            .get("rows", [])]  # fmt: skip


def markdown(results, details=None):
    """RESULTS.md: the machine, the table, the goals, then details."""
    m = results["machine"]
    training = results.get("inputs", {}).get("teacher_training")
    reused = ""
    if training and training["reused"]:
        took = sum(training["seconds"].values()) / 60
        reused = (
            f"; teachers {', '.join(training['reused'])} reused from an earlier "
            f"run, trained in {took:.1f} min"
        )
    lines = [
        "# Benchmark results",
        "",
        f"`{results['command']}` on {results['started']}: "
        f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gib']} GiB, "
        f"{m['device_name']}; torch {m['torch']}, SpeechBrain {m['speechbrain']}, "
        f"{m['torch_threads']} torch thread(s); {results['seconds'] / 60:.1f} min "
        f"in all ({results['setup_seconds'] / 60:.1f} min making inputs{reused}).",
        "",
        table(all_rows(results)),
        "",
    ]
    if results.get("mode") == "quick":
        lines += [
            "Quick mode (smoke run): tiny corpus and teachers, few repeats; the "
            "figures are indicative only, the full run is the measurement.",
            "",
        ]
    for name in BENCHMARKS:
        entry = results["benchmarks"].get(name)
        if entry and entry.get("goal"):
            met = {True: "met", False: "**not met**", None: "-"}[entry["met"]]
            lines.append(f"- {name}: {entry['goal']}: {met}")
    for name, text in (details or {}).items():
        lines += ["", f"## {name}", "", text]
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_results(results, json_path, md_path, details=None):
    """Writes results.json and RESULTS.md (each atomically); returns the md."""
    results["goals_met"] = {
        name: entry["met"]
        for name, entry in results["benchmarks"].items()
        if entry.get("met") is not None
    }
    text = markdown(results, details)
    if json_path:
        write_atomic(json_path, json.dumps(results, indent=2, default=str) + "\n")
    if md_path:
        write_atomic(md_path, text)
    return text


# --------------------------------------------------------------------------
# The run


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, ~2-3 min")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--data_folder", default=None, help="TIMIT or mini corpus")
    parser.add_argument("--teachers", default=None, help="teacher list file")
    parser.add_argument("--out", default=DEFAULT_JSON, help="results JSON")
    parser.add_argument("--md", default=DEFAULT_MD, help="results markdown")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="inputs' cache")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks"
    )
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    import torch

    torch.set_num_threads(args.threads)
    import kd_step
    import prepare_speed
    import save_throughput
    import store_size

    mode = MODES["quick" if args.quick else "full"]
    started = time.time()
    results = {
        "command": " ".join(["python bench/run_all.py", *argv]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(args.device),
        "benchmarks": {},
    }
    run_these = args.only or BENCHMARKS
    needs_inputs = {"store_size", "save_throughput"} & set(run_these)
    data_folder = teachers = None
    if needs_inputs:
        data_folder, teachers, made = make_inputs(args, mode)
        results["inputs"] = made
    results["setup_seconds"] = time.time() - started
    results["options"] = {
        "threads": args.threads,
        "device": args.device,
        "data_folder": data_folder,
        "teachers": teachers,
        "mode": {k: v for k, v in mode.items() if k != "teacher_args"},
    }
    details, raw = {}, {}

    def timed(name, fn):
        log(f"== {name} ...")
        start = time.time()
        out = fn()
        raw[name] = out
        entry = SUMMARISE[name](out)
        entry["seconds"] = time.time() - start
        results["benchmarks"][name] = entry
        log(f"== {name}: {entry['seconds']:.0f} s")
        return out

    if "store_size" in run_these:
        shutil.rmtree(os.path.join(args.workdir, "store_size_run"), True)
        out = timed(
            "store_size",
            lambda: store_size.run(
                data_folder,
                teachers,
                os.path.join(args.workdir, "store_size_run"),
                mode["store_batch_size"],
                args.device,
            ),
        )
        shutil.rmtree(os.path.join(args.workdir, "store_size_run"), True)
        details["store_size"] = store_details(out)
    if "kd_step" in run_these:
        opts = dict(mode["kd_step"], threads=args.threads, json_path=None)
        out = timed("kd_step", lambda: kd_step.run(**opts))
        details["kd_step (CPU, the CPU-sized student)"] = kd_step.markdown(out)
    if "save_throughput" in run_these:
        out = timed(
            "save_throughput",
            lambda: save_throughput.run(
                data_folder,
                teachers,
                repeats=mode["save_repeats"],
                batch_size=mode["store_batch_size"],
                device=args.device,
                threads=args.threads,
            ),
        )
        details["save_throughput"] = save_throughput.markdown(out)
    if "prepare_speed" in run_these:
        out = timed("prepare_speed", lambda: prepare_speed.run(**mode["prepare"]))
        details["prepare_speed"] = prepare_speed.markdown(out)

    results["raw"] = raw
    results["seconds"] = time.time() - started
    try:
        results["machine"]["load_average_end"] = list(os.getloadavg())
    except OSError:
        pass
    text = write_results(results, args.out, args.md, details)
    print(text)
    print(f"JSON: {args.out}\nmarkdown: {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
