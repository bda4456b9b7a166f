"""What finished runs say about themselves: the results table and the plot.

Read from what the stage scripts already write in each output folder, so any
set of runs can be summarised, real TIMIT runs included:

- ``hyperparams.yaml``: the run's name (``teacher_name``, or ``strategy`` for a
  student of ``train_kd.py``), seed, selection metric and test search;
- ``train_log.txt``: per epoch the valid PER of the attention search, of greedy
  CTC, and the epoch's wall time (``time_s``); the test line;
- ``per_test.txt``: the test PER of the best-valid checkpoint (first line);
- ``save/model_config.json``: the architecture, to count its parameters.

``summarize_runs(folders)`` gives one dict per run; ``write_results`` writes
``RESULTS.md``, ``results.json`` and ``valid_per.png`` from them.
"""

import json
import os
import re
import statistics

from mtkd import RecipeError

RESULTS_MD = "RESULTS.md"
RESULTS_JSON = "results.json"
PLOT_PNG = "valid_per.png"

# A train_log line: "key: value" pairs, stages separated by " - ".
_PAIR = re.compile(r"([A-Za-z_][A-Za-z _]*?): ([-+0-9.eE]+|True|False|None)")
_TOP_LEVEL = re.compile(r"^([A-Za-z_]\w*): (.*)$", re.M)


class ResultsError(RecipeError):
    """A folder that is not (yet) a finished run of this recipe."""


def log_line_values(line):
    """{key: value text} of one train_log line ("epoch: 3, lr: 2.00e-03 - ...")."""
    return {k.strip(): v for k, v in _PAIR.findall(line)}


def parse_train_log(path):
    """Epoch rows and the test row of a ``train_log.txt``.

    Returns (epochs, test): ``epochs`` is a list of dicts with ``epoch``,
    ``valid_PER``, ``valid_CTC_PER``, ``time_s`` (None in logs written before
    the time was logged), in file order, a resumed run's repeated epochs
    replaced by their last occurrence; ``test`` is the last test row (dict with
    ``PER``, ``CTC_PER``, ``time_s``) or None.
    """
    by_epoch, test = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            values = log_line_values(line)
            if "epoch" in values and "valid PER" in values:
                epoch = int(float(values["epoch"]))
                by_epoch[epoch] = {
                    "epoch": epoch,
                    "valid_PER": float(values["valid PER"]),
                    "valid_CTC_PER": float(values.get("valid CTC_PER", "nan")),
                    "time_s": _float_or_none(values.get("time_s")),
                }
            elif "test PER" in values:
                test = {
                    "PER": float(values["test PER"]),
                    "CTC_PER": float(values.get("test CTC_PER", "nan")),
                    "time_s": _float_or_none(values.get("time_s")),
                }
    return [by_epoch[e] for e in sorted(by_epoch)], test


def logged_epoch_times(path):
    """``time_s`` of every epoch line of a train log, repeated epochs included
    (seconds; None for a line without a time)."""
    with open(path, encoding="utf-8") as f:
        rows = [log_line_values(line) for line in f]
    return [
        _float_or_none(values.get("time_s"))
        for values in rows
        if "epoch" in values and "valid PER" in values
    ]


def _float_or_none(text):
    return None if text is None else float(text)


def top_level_values(path):
    """{key: text} of the top-level scalar lines of a resolved hyperparams.yaml."""
    with open(path, encoding="utf-8") as f:
        return {k: v.split(" #")[0].strip() for k, v in _TOP_LEVEL.findall(f.read())}


def count_parameters(model_config_path):
    """Number of parameters of the model a run's ``model_config.json`` describes."""
    from mtkd.model import CTCAttentionASR

    with open(model_config_path, encoding="utf-8") as f:
        config = json.load(f)
    model = CTCAttentionASR(**config["model"])
    return sum(p.numel() for p in model.parameters())


def read_run(folder):
    """One run's figures (dict), or ResultsError naming what is missing.

    Keys: ``name``, ``kind`` (teacher | student), ``folder``, ``seed``,
    ``parameters``, ``selection_metric``, ``valid_PER`` (the selection metric's
    value at the kept checkpoint), ``best_epoch``, ``test_PER`` (the run's test
    search), ``test_CTC_PER`` (greedy CTC), ``wall_time_s`` (training epochs
    and test; None when the log has no times), ``epochs`` (per-epoch rows).
    """
    folder = os.path.abspath(folder)
    paths = {
        name: os.path.join(folder, name)
        for name in ("hyperparams.yaml", "train_log.txt", "per_test.txt")
    }
    paths["model_config.json"] = os.path.join(folder, "save", "model_config.json")
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise ResultsError(
                f"{folder}: no {name} ({path}). Give the output folder of a "
                "finished train_teacher.py or train_kd.py run (one with "
                "per_test.txt: the test ran)."
            )
    values = top_level_values(paths["hyperparams.yaml"])
    if "tea_infer_dir" in values:
        kind, name = "student", f"student-{values.get('strategy', '?')}"
    else:
        name = values.get("teacher_name", os.path.basename(folder))
        kind = "student" if name.startswith("student") else "teacher"
    epochs, test = parse_train_log(paths["train_log.txt"])
    if not epochs:
        raise ResultsError(f"{paths['train_log.txt']}: no epoch line.")
    metric = values.get("selection_metric", "PER")
    key = "valid_CTC_PER" if metric == "CTC_PER" else "valid_PER"
    best = min(epochs, key=lambda row: row[key])
    with open(paths["per_test.txt"], encoding="utf-8") as f:
        first = dict(re.findall(r"(\w+): ([-+0-9.eE]+)", f.readline()))
    # Every logged epoch counts, a redone one too (an epoch whose checkpoint
    # save was killed is logged, then run and logged again): both took time.
    times = logged_epoch_times(paths["train_log.txt"])
    times.append(test["time_s"] if test else None)
    return {
        "name": name,
        "kind": kind,
        "folder": folder,
        "seed": int(values["seed"]) if values.get("seed", "").isdigit() else None,
        "parameters": count_parameters(paths["model_config.json"]),
        "selection_metric": metric,
        "valid_PER": best[key],
        "best_epoch": best["epoch"],
        "test_PER": float(first["PER"]),
        "test_CTC_PER": float(first.get("CTC_PER", "nan")),
        "test_search": _search_words(values),
        "wall_time_s": None if None in times else round(sum(times), 1),
        "epochs": epochs,
    }


def add_costs(runs, wav_paths, device="cpu", repeats=3):
    """Adds ``checkpoint_bytes``, ``rtf`` and ``rtf_audio_s`` to every run.

    Every model decodes the same ``wav_paths`` the same way, one after the
    other in this process (``mtkd.export.model_cost``: the exported model, the
    run's test search, file by file, one torch thread, median of ``repeats``).
    """
    from mtkd.export import model_cost

    for run in runs:
        cost = model_cost(run["folder"], wav_paths, device=device, repeats=repeats)
        run["checkpoint_bytes"] = cost["checkpoint_bytes"]
        run["rtf"] = cost["rtf"]
        run["rtf_audio_s"] = cost["audio_seconds"]
    return runs


def test_files(run, max_files):
    """Up to ``max_files`` audio files of a run's test manifest (test.json),
    spread evenly over it in manifest order."""
    data_root = top_level_values(os.path.join(run["folder"], "hyperparams.yaml"))
    with open(os.path.join(run["folder"], "test.json"), encoding="utf-8") as f:
        wavs = [
            entry["wav"].replace("{data_root}", data_root["data_folder"])
            for entry in json.load(f).values()
        ]
    step = max(1, len(wavs) // max_files)
    return wavs[::step][:max_files]


# The size and speed columns, for runs that went through add_costs.
COST_COLUMNS = (
    ("checkpoint", lambda run: f"{run['checkpoint_bytes'] / 1e6:.2f} MB"),
    ("RTF (CPU)", lambda run: f"{run['rtf']:.3f}"),
)


def _search_words(values):
    beam = values.get("test_beam_size", "?")
    ctc = float(values.get("decode_ctc_weight", "0") or 0)
    return f"beam {beam}" + (f" + CTC {ctc:g}" if ctc > 0 else "")


def summarize_runs(folders):
    """``read_run`` of every folder, in the order given."""
    return [read_run(folder) for folder in folders]


def spread(runs):
    """Spread of the teachers' test PER (max - min; stdev when 3 or more)."""
    pers = [run["test_PER"] for run in runs if run["kind"] == "teacher"]
    if len(pers) < 2:
        return None
    return {
        "n": len(pers),
        "min": min(pers),
        "max": max(pers),
        "range": max(pers) - min(pers),
        "stdev": statistics.stdev(pers) if len(pers) >= 3 else None,
    }


def student_comparison(runs, teacher_spread):
    """Each distilled student against the baseline student, and whether the
    difference exceeds the teachers' seed-to-seed spread (stdev, else range).

    Returns a list of (name, test PER minus baseline, exceeds: bool or None).
    """
    baseline = next((r for r in runs if r["name"] == "student-baseline"), None)
    if baseline is None:
        return []
    noise = None
    if teacher_spread:
        noise = teacher_spread["stdev"] or teacher_spread["range"]
    rows = []
    for run in runs:
        if run["kind"] != "student" or run is baseline:
            continue
        delta = run["test_PER"] - baseline["test_PER"]
        rows.append((run["name"], delta, None if noise is None else abs(delta) > noise))
    return rows


def _fmt_time(seconds):
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def markdown_table(runs, extra_columns=()):
    """The results table: model, parameters, valid PER, test PER, wall time.

    ``extra_columns``: (header, function of a run -> text) pairs appended to
    each row (the size and speed columns, for example).
    """
    head = ["model", "seed", "parameters", "valid PER", "test PER", "test CTC PER"]
    head += ["wall time"] + [h for h, _ in extra_columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        cells = [
            run["name"],
            "-" if run["seed"] is None else str(run["seed"]),
            f"{run['parameters'] / 1e3:.0f} k",
            f"{run['valid_PER']:.2f}",
            f"{run['test_PER']:.2f}",
            f"{run['test_CTC_PER']:.2f}",
            _fmt_time(run["wall_time_s"]),
        ] + [fn(run) for _, fn in extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(runs):
    """The sentences under the table: how PERs were measured, the spread, and
    whether student differences exceed it."""
    out = []
    metrics = sorted({(r["selection_metric"], r["test_search"]) for r in runs})
    for metric, search in metrics:
        valid = "greedy CTC" if metric == "CTC_PER" else "greedy attention search"
        out.append(
            f"valid PER: {valid} (the selection metric), at the kept checkpoint; "
            f"test PER: {search} on that checkpoint; test CTC PER: greedy CTC."
        )
    teacher_spread = spread(runs)
    if teacher_spread:
        sd = teacher_spread["stdev"]
        out.append(
            f"Teachers' test PER spread over {teacher_spread['n']} seeds (and "
            f"architectures): {teacher_spread['min']:.2f} to "
            f"{teacher_spread['max']:.2f} (range {teacher_spread['range']:.2f}"
            + (f", stdev {sd:.2f}" if sd is not None else "")
            + ")."
        )
    for name, delta, exceeds in student_comparison(runs, teacher_spread):
        verdict = {
            True: "exceeds the teachers' spread",
            False: "within the teachers' spread (not a significant difference)",
            None: "no spread to compare with",
        }[exceeds]
        out.append(f"{name} vs student-baseline: {delta:+.2f} PER points, {verdict}.")
    return out


def plot_valid_curves(runs, path):
    """PNG of the selection metric's valid PER per epoch for every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for run in runs:
        key = "valid_CTC_PER" if run["selection_metric"] == "CTC_PER" else "valid_PER"
        xs = [row["epoch"] for row in run["epochs"]]
        ys = [row[key] for row in run["epochs"]]
        style = "-" if run["kind"] == "teacher" else "--"
        ax.plot(xs, ys, style, marker=".", label=run["name"])
    metrics = {r["selection_metric"] for r in runs}
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid PER (%)" + (" (greedy CTC)" if metrics == {"CTC_PER"} else ""))
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_results(runs, out_dir, title="Results", preamble=(), extra_columns=()):
    """Writes RESULTS.md, results.json and valid_per.png; returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    plot_valid_curves(runs, os.path.join(out_dir, PLOT_PNG))
    lines = [f"# {title}", "", *preamble]
    if preamble:
        lines.append("")
    lines += [markdown_table(runs, extra_columns), ""]
    sentences = notes(runs)
    lines += [f"- {sentence}" for sentence in sentences]
    lines += ["", f"![valid PER per epoch]({PLOT_PNG})", ""]
    text = "\n".join(lines)
    _atomic_write(os.path.join(out_dir, RESULTS_MD), text)
    payload = {"runs": runs, "teacher_spread": spread(runs), "notes": sentences}
    _atomic_write(
        os.path.join(out_dir, RESULTS_JSON), json.dumps(payload, indent=2) + "\n"
    )
    return text


def _atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
