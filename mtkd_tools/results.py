"""What finished runs say about themselves: the results table and the plot.

Read from what the stage scripts already write in each output folder, so any
set of runs can be summarised, real TIMIT runs included:

- ``hyperparams.yaml``: the run's name (``teacher_name``, or ``strategy`` for a
  student of ``train_kd.py``), seed, selection metric and test search;
- ``train_log.txt``: per epoch the valid PER of the attention search, of greedy
  CTC, and the epoch's wall time (``time_s``); the test line;
- ``per_test.txt``: the test PER of the best-valid checkpoint (first line);
- ``save/model_config.json``: the architecture, to count its parameters.

``read_run(folder)`` gives one dict per run; ``group_runs`` gathers
the seeds of one model (same name, same settings but the seed) into one row
with mean +- standard deviation; ``compare_to_baseline`` tests each distilled
student against the baseline student (``mtkd_tools.significance``: paired bootstrap
on the per-utterance edit counts of ``per_test.txt``, pooled over seeds);
``write_results`` writes ``RESULTS.md``, ``results.json`` and
``valid_per.png`` from them. docs/results-and-significance.md explains it all.
"""

import json
import os
import re
import statistics

from mtkd import RecipeError
from mtkd.runs import RunFolder, plain_value, read_hyperparams
from mtkd_tools.significance import (
    DEFAULT_UNIT,
    SIGNIFICANCE_LEVEL,
    UTTERANCES_JSON,
    describe,
    paired_bootstrap,
    run_edit_counts,
    write_utterances,
)

BASELINE = "student-baseline"
# Convergence: the valid PER change over this many last epochs is reported,
# and a fall of more than CONVERGED_PERCENT of the valid PER over them is
# called "still learning" under the table.
LAST_EPOCHS = 3
CONVERGED_PERCENT = 2.0
# Hyperparameters that do not make two runs different models.
NOT_SETTINGS = {"seed", "__set_seed", "teacher_name"}

RESULTS_MD = "RESULTS.md"
RESULTS_JSON = "results.json"
PLOT_PNG = "valid_per.png"

# A train_log line: "key: value" pairs, stages separated by " - ".
_PAIR = re.compile(r"([A-Za-z_][A-Za-z _]*?): ([-+0-9.eE]+|True|False|None)")


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
    ``PER``, ``CTC_PER``, ``time_s``, ``epoch``: the epoch whose checkpoint
    it loaded, None if not logged) or None.
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
                    "epoch": _int_or_none(values.get("Epoch loaded")),
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


def _int_or_none(text):
    return None if text is None else int(float(text))


def top_level_values(path):
    """{key: text} of a resolved hyperparams.yaml's top-level values: scalars
    as YAML writes them ("0.002", "true"), lists in flow style ("[16, 32]");
    mappings and objects (``!new:``) are left out."""
    values = {}
    for key, value in read_hyperparams(path).items():
        if getattr(getattr(value, "tag", None), "value", None) or isinstance(
            value, dict
        ):
            continue
        plain = plain_value(value)
        values[str(key)] = json.dumps(plain) if not isinstance(plain, str) else plain
    return values


def count_parameters(model_config_path):
    """Number of parameters of the model a run's ``model_config.json`` describes."""
    from mtkd.model import CTCAttentionASR

    with open(model_config_path, encoding="utf-8") as f:
        config = json.load(f)
    model = CTCAttentionASR(**config["model"])
    return sum(p.numel() for p in model.parameters())


def _self_training(values):
    """A train_kd.py run on unlabelled audio with unlabelled_alpha 0: on the
    unlabelled audio it learns the teachers' consensus as a hard label,
    nothing of their distributions (self-training; its labelled rows may
    still have a KD term, as the matched control's do)."""
    unlabelled = str(values.get("unlabelled", "null")).strip()
    try:
        unlabelled_alpha = float(values.get("unlabelled_alpha", 1))
    except ValueError:
        return False
    return unlabelled not in ("null", "None", "") and unlabelled_alpha == 0.0


def read_run(folder):
    """One run's figures (dict), or ResultsError naming what is missing.

    Keys: ``name``, ``kind`` (teacher | student), ``folder``, ``seed``,
    ``parameters``, ``selection_metric``, ``valid_PER`` (the selection metric's
    value at the kept checkpoint), ``best_epoch``, ``test_PER`` (the run's test
    search), ``test_CTC_PER`` (greedy CTC), ``wall_time_s`` (training epochs
    and test; None when the log has no times), ``valid_change_last3`` (the
    selection metric's valid PER at the last epoch minus ``LAST_EPOCHS``
    epochs before it, PER points; None with fewer epochs), ``epochs``
    (per-epoch rows) and ``settings`` (every other top-level hyperparameter
    of the run, paths into its own folder left out: what makes it a model).
    """
    run = RunFolder(folder)
    folder = run.folder
    paths = {
        "hyperparams.yaml": run.hparams_file,
        "train_log.txt": run.train_log,
        "per_test.txt": run.per_test_file,
        "model_config.json": run.model_config_file,
    }
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
        if _self_training(values):  # no KD term at all: the strategy is moot
            name = "student-pseudo"
    else:
        name = values.get("teacher_name", os.path.basename(folder))
        kind = "student" if name.startswith("student") else "teacher"
    epochs, test = parse_train_log(paths["train_log.txt"])
    if not epochs:
        raise ResultsError(f"{paths['train_log.txt']}: no epoch line.")
    metric = values.get("selection_metric", "PER")
    key = "valid_CTC_PER" if metric == "CTC_PER" else "valid_PER"
    lowest = min(row[key] for row in epochs)
    tied = [row for row in epochs if row[key] == lowest]
    # Among epochs tied at the lowest figure, the one the test loaded: the
    # Checkpointer keeps one of them (a later one, as seen), not always the first.
    loaded = test and test["epoch"]
    best = next((row for row in tied if row["epoch"] == loaded), tied[0])
    first = run.test_pers()
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
        "valid_change_last3": valid_change(epochs, key),
        "epochs": epochs,
        "settings": {
            k: v for k, v in values.items() if k not in NOT_SETTINGS and folder not in v
        },
    }


def valid_change(epochs, key, last=LAST_EPOCHS):
    """``key`` at the last epoch row minus ``last`` rows before it (None when
    the run has ``last`` epochs or fewer): what the last epochs bought."""
    if len(epochs) <= last:
        return None
    return round(epochs[-1][key] - epochs[-1 - last][key], 4)


def add_costs(runs, wav_paths, device="cpu", repeats=3):
    """Adds ``checkpoint_bytes``, ``rtf`` and ``rtf_audio_s`` to every run.

    Every model decodes the same ``wav_paths`` the same way, one after the
    other in this process (``mtkd_tools.export.model_cost``: the exported model, the
    run's test search, file by file, one torch thread, median of ``repeats``).
    """
    from mtkd_tools.export import model_cost

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


METRICS = ("valid_PER", "test_PER", "test_CTC_PER", "valid_change_last3")


def mean_std(values):
    """{"mean", "std" (sample, n - 1; None for one value), "values"}; None
    entries (no figure) are left out of mean and std but kept in values."""
    known = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(known) if known else None,
        "std": statistics.stdev(known) if len(known) >= 2 else None,
        "values": list(values),
    }


def group_runs(runs):
    """The runs of one model gathered over seeds, in order of first appearance.

    Runs are one model when they have the same name and the same settings
    (``read_run``'s ``settings``: every hyperparameter but the seed and the
    run's own paths). When runs of one name differ in other settings, each
    set is its own model, named with those settings, e.g. ``student-best
    (alpha=0.3)``, so that no mean mixes two configurations.

    Returns a list of dicts: ``name``, ``kind``, ``seeds``, ``folders``,
    ``runs`` (the run dicts, by seed), ``n``, ``varying`` (the settings that
    tell it apart from other models of its name), ``parameters``, and per
    figure of ``METRICS`` and ``wall_time_s`` a ``mean_std`` dict.
    """
    by_name = {}
    for run in runs:
        by_name.setdefault(run["name"], []).append(run)
    groups = []
    for name, named in by_name.items():
        keys = set().union(*(run.get("settings", {}) for run in named))
        varying = sorted(
            k for k in keys if len({r.get("settings", {}).get(k) for r in named}) > 1
        )
        split = {}
        for run in named:
            label = tuple((k, run.get("settings", {}).get(k)) for k in varying)
            split.setdefault(label, []).append(run)
        for label, members in split.items():
            members = sorted(members, key=lambda r: (r["seed"] is None, r["seed"]))
            shown = ", ".join(f"{k}={v}" for k, v in label)
            groups.append(
                {
                    "name": f"{name} ({shown})" if shown else name,
                    "base_name": name,
                    "kind": members[0]["kind"],
                    "seeds": [r["seed"] for r in members],
                    "folders": [r["folder"] for r in members],
                    "runs": members,
                    "n": len(members),
                    "varying": dict(label),
                    "parameters": members[0]["parameters"],
                    "selection_metric": _one_or_none(
                        {r.get("selection_metric") for r in members}
                    ),
                    **{
                        key: mean_std([r.get(key) for r in members])
                        for key in (*METRICS, "wall_time_s")
                    },
                }
            )
    return groups


def _one_or_none(values):
    """The one value of a set, or None for none or several."""
    return next(iter(values)) if len(values) == 1 else None


def _baseline_for(group, baselines):
    """The baseline model a student model is compared with: the only one, or
    the one whose distinguishing settings the student shares (None if none
    or several fit)."""
    settings = group["runs"][0].get("settings", {})
    fits = [
        b
        for b in baselines
        if all(settings.get(k) == v for k, v in b["varying"].items())
    ]
    return fits[0] if len(fits) == 1 else None


def run_counts(groups):
    """{``<model>@<seed>``: ``read_edit_counts`` of that run's per_test.txt}
    for every run of ``group_runs``' models: the per-utterance results that
    ``utterances.json`` keeps and every comparison is computed from."""
    return {
        f"{group['name']}@{run['seed']}": run_edit_counts(run["folder"])
        for group in groups
        for run in group["runs"]
    }


def compare_to_baseline(
    groups, unit=DEFAULT_UNIT, level=SIGNIFICANCE_LEVEL, counts=None
):
    """Each distilled student model against the baseline student model.

    Seed i of the student is paired with seed i of the baseline (by seed
    order; with unequal numbers of seeds the first ones of each), and the
    paired bootstrap of ``mtkd_tools.significance`` runs on their edit counts
    (``counts``: ``run_counts(groups)`` when not given), with its seed-level
    tests.

    Returns a list of dicts: ``name``, ``baseline``, ``pairs`` (list of
    [student seed, baseline seed]), ``baseline_runs`` and ``student_runs``
    (their keys in ``counts``), ``result`` (``paired_bootstrap``'s dict, or
    None), ``sentence`` (the comparison line, or why there is none).
    """
    counts = run_counts(groups) if counts is None else counts
    baselines = [g for g in groups if g["base_name"] == BASELINE]
    out = []
    for group in groups:
        if group["kind"] != "student" or group["base_name"] == BASELINE:
            continue
        baseline = _baseline_for(group, baselines)
        if baseline is None:
            if baselines:
                out.append(
                    {
                        "name": group["name"],
                        "baseline": None,
                        "pairs": [],
                        "result": None,
                        "sentence": f"{group['name']}: no test, "
                        f"{len(baselines)} {BASELINE} models and none matches "
                        "its settings alone; summarise each configuration "
                        "with its own baseline.",
                    }
                )
            continue
        n = min(group["n"], baseline["n"])
        base_keys = [f"{baseline['name']}@{r['seed']}" for r in baseline["runs"][:n]]
        student_keys = [f"{group['name']}@{r['seed']}" for r in group["runs"][:n]]
        result = paired_bootstrap(
            [counts[k] for k in base_keys], [counts[k] for k in student_keys],
            unit=unit,
        )  # fmt: skip
        sentence = describe(group["name"], baseline["name"], result, level)
        if n < max(group["n"], baseline["n"]):
            sentence += (
                f" (Only the first {n} seeds of each are paired: "
                f"{group['n']} vs {baseline['n']}.)"
            )
        out.append(
            {
                "name": group["name"],
                "baseline": baseline["name"],
                "pairs": [
                    [s["seed"], b["seed"]]
                    for s, b in zip(
                        group["runs"][:n], baseline["runs"][:n], strict=True
                    )
                ],
                "baseline_runs": base_keys,
                "student_runs": student_keys,
                "result": result,
                "sentence": sentence,
            }
        )
    return out


def _fmt_time(seconds):
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _cell(stats, digits=2, signed=False):
    """'17.76' for one seed, '17.76 ± 0.52' (sample std) for several, '-'."""
    if stats["mean"] is None:
        return "-"
    text = f"{stats['mean']:{'+' if signed else ''}.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def _seeds_cell(seeds):
    """'2000', '2000-2002' (consecutive) or '2000, 2005'; '-' when unknown."""
    if None in seeds:
        return "-"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def selection_metrics(items):
    """The selection metrics (``PER``, ``CTC_PER``) of runs, or of models
    (``group_runs``: theirs, or their runs')."""
    metrics = set()
    for item in items:
        if item.get("selection_metric"):
            metrics.add(item["selection_metric"])
        metrics.update(run["selection_metric"] for run in item.get("runs", ()))
    return metrics


def valid_name(items):
    """What the tables call the valid figure, the selection metric's: ``valid
    CTC PER`` when every run selected on greedy CTC (the name of greedy CTC's
    figure everywhere: train log, progress lines, test columns), else ``valid
    PER`` (the attention search's, or a mix explained under the table)."""
    return "valid CTC PER" if selection_metrics(items) == {"CTC_PER"} else "valid PER"


def markdown_table(groups, extra_columns=(), valid=None):
    """The results table, one row per model (``group_runs``): seeds,
    parameters, the valid figure (``valid``, default ``valid_name(groups)``),
    test PER, test CTC PER, the valid figure's change over the last 3 epochs
    (mean ± sample std over seeds) and the wall time per run.

    ``extra_columns``: (header, function of a run -> text) pairs appended to
    each row, given the model's first run (the size and speed columns).
    """
    valid = valid or valid_name(groups)
    head = ["model", "seeds", "parameters", valid, "test PER", "test CTC PER"]
    head += [f"valid change, last {LAST_EPOCHS} epochs", "wall time per run"]
    head += [h for h, _ in extra_columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in groups:
        cells = [
            group["name"],
            _seeds_cell(group["seeds"]),
            f"{group['parameters'] / 1e3:.0f} k",
            _cell(group["valid_PER"]),
            _cell(group["test_PER"]),
            _cell(group["test_CTC_PER"]),
            _cell(group["valid_change_last3"], signed=True),
            _fmt_time(group["wall_time_s"]["mean"]),
        ] + [fn(group["runs"][0]) for _, fn in extra_columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(runs):
    """Every run on its own row (shown when a model has several seeds)."""
    head = ["model", "seed", valid_name(runs), "best epoch", "test PER"]
    head += ["test CTC PER"]
    head += [f"valid change, last {LAST_EPOCHS} epochs", "wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        change = run.get("valid_change_last3")
        cells = [
            run["name"],
            "-" if run["seed"] is None else str(run["seed"]),
            f"{run['valid_PER']:.2f}",
            str(run["best_epoch"]),
            f"{run['test_PER']:.2f}",
            f"{run['test_CTC_PER']:.2f}",
            "-" if change is None else f"{change:+.2f}",
            _fmt_time(run["wall_time_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def still_learning(groups, percent=CONVERGED_PERCENT):
    """Models whose valid PER fell by more than ``percent`` % of its value over
    the last epochs (mean over seeds): [(name, relative change in %)]."""
    out = []
    for group in groups:
        change = group["valid_change_last3"]["mean"]
        runs = group["runs"]
        key = (
            "valid_CTC_PER"
            if runs[0]["selection_metric"] == "CTC_PER"
            else ("valid_PER")
        )
        last = statistics.fmean(r["epochs"][-1][key] for r in runs)
        if change is not None and last > 0 and -change / last * 100 > percent:
            out.append((group["name"], 100 * change / last))
    return out


def notes(groups, comparisons=()):
    """The sentences under the table: how the figures were measured, which
    models were still learning, and the verdict on every distilled student
    (``compare_to_baseline``)."""
    out = []
    runs = [run for group in groups for run in group["runs"]]
    name = valid_name(groups)
    metrics = sorted({(r["selection_metric"], r["test_search"]) for r in runs})
    for metric, search in metrics:
        valid = "greedy CTC" if metric == "CTC_PER" else "greedy attention search"
        out.append(
            f"{name}: {valid} (the selection metric), at the kept checkpoint; "
            f"test PER: {search} on that checkpoint; test CTC PER: greedy CTC."
        )
    if any(group["n"] > 1 for group in groups):
        out.append(
            "Figures with ± are the mean ± sample standard deviation over the "
            "model's seeds (every run is in the table below and in results.json)."
        )
    out.append(
        f"valid change, last {LAST_EPOCHS} epochs: the {name} "
        f"at the last epoch minus {LAST_EPOCHS} epochs before (near 0: converged; "
        "clearly negative: still learning when training stopped)."
    )
    learning = still_learning(groups)
    if learning:
        out.append(
            f"Still learning ({name} down by more than {CONVERGED_PERCENT:g} % "
            f"of its value over the last {LAST_EPOCHS} epochs): "
            + ", ".join(f"{name} ({rel:+.1f} %)" for name, rel in learning)
            + ". A comparison with a model still learning says which got "
            "further in these epochs, not which is better once trained."
        )
    out += [comparison["sentence"] for comparison in comparisons]
    return out


def plot_valid_curves(groups, path):
    """PNG of the selection metric's valid PER per epoch for every run, one
    colour per model (its seeds share it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, group in enumerate(groups):
        for k, run in enumerate(group["runs"]):
            metric = run["selection_metric"]
            key = "valid_CTC_PER" if metric == "CTC_PER" else "valid_PER"
            xs = [row["epoch"] for row in run["epochs"]]
            ys = [row[key] for row in run["epochs"]]
            style = "-" if run["kind"] == "teacher" else "--"
            label = group["name"] + (f" ({group['n']} seeds)" if group["n"] > 1 else "")
            ax.plot(
                xs, ys, style, marker=".", color=colours[number % len(colours)],
                label=label if k == 0 else None, alpha=1.0 if k == 0 else 0.6,
            )  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{valid_name(groups)} (%)")
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


def write_results(
    runs, out_dir, title="Results", preamble=(), extra_columns=(), unit=DEFAULT_UNIT
):
    """Writes RESULTS.md, results.json and valid_per.png; returns the markdown.

    ``runs``: ``read_run`` dicts, in the order the table should follow;
    ``unit``: what the significance test's bootstrap draws (utterance or
    speaker). results.json holds ``runs`` (every run, every figure),
    ``models`` (``group_runs`` without the run dicts: per figure the mean,
    sample std and each seed's value), ``comparisons``
    (``compare_to_baseline``) and ``notes`` (the sentences under the table).
    """
    os.makedirs(out_dir, exist_ok=True)
    groups = group_runs(runs)
    counts = run_counts(groups)
    comparisons = compare_to_baseline(groups, unit, counts=counts)
    plot_valid_curves(groups, os.path.join(out_dir, PLOT_PNG))
    lines = [f"# {title}", "", *preamble]
    if preamble:
        lines.append("")
    lines += [markdown_table(groups, extra_columns), ""]
    sentences = notes(groups, comparisons)
    lines += [f"- {sentence}" for sentence in sentences]
    if any(group["n"] > 1 for group in groups):
        lines += ["", "Every run:", "", runs_table(runs)]
    lines += ["", f"![valid PER per epoch]({PLOT_PNG})", ""]
    text = "\n".join(lines)
    atomic_write(os.path.join(out_dir, RESULTS_MD), text)
    models = [{k: v for k, v in g.items() if k != "runs"} for g in groups]
    payload = {
        "runs": runs,
        "models": models,
        "comparisons": comparisons,
        "notes": sentences,
    }
    atomic_write(
        os.path.join(out_dir, RESULTS_JSON), json.dumps(payload, indent=2) + "\n"
    )
    write_utterances(os.path.join(out_dir, UTTERANCES_JSON), counts)
    return text


def atomic_write(path, text):
    """Writes ``text`` to a temporary name, then renames it to ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
