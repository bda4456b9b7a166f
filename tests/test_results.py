"""mtkd_tools.results and summarize_results.py: figures read from run folders."""

import json
import os
import re

import pytest
from conftest import write_per_test

from mtkd_tools.results import (
    ResultsError,
    compare_to_baseline,
    group_runs,
    markdown_table,
    notes,
    parse_train_log,
    read_run,
    runs_table,
)

TRAIN_LOG = """\
epoch: 1, lr: 2.00e-03, time_s: 30.50 - train loss: 3.38 - valid loss: 2.77, valid PER: 2.33e+02, valid CTC_PER: 84.26
epoch: 2, lr: 2.00e-03, time_s: 29.50 - train loss: 2.57 - valid loss: 2.33, valid PER: 95.00, valid CTC_PER: 40.00
epoch: 2, lr: 2.00e-03, time_s: 31.00 - train loss: 2.57 - valid loss: 2.33, valid PER: 90.00, valid CTC_PER: 30.00
epoch: 3, lr: 1.60e-03, time_s: 29.00 - train loss: 2.14 - valid loss: 2.10, valid PER: 80.00, valid CTC_PER: 35.00
Epoch loaded: 2, time_s: 12.00 - test loss: 2.00, test PER: 25.00, test CTC_PER: 31.00
"""  # noqa: E501 (real train_log lines are long)

MODEL_CONFIG = {
    "model": {
        "cnn_blocks": 1, "cnn_channels": [4], "rnn_layers": 1, "rnn_neurons": 8,
        "dnn_blocks": 1, "dnn_neurons": 8, "emb_size": 4, "dec_neurons": 8,
        "attn_dim": 8,
    }
}  # fmt: skip


def make_run(folder, name="tea0", seed=1000, metric="CTC_PER", test_per=25.0,
             log=TRAIN_LOG, kd=False, edits=None, extra=()):  # fmt: skip
    """A finished run folder as the scripts leave it (files that matter).

    ``edits``: per-utterance edit counts of its per_test.txt (20 phones per
    utterance; default: 10 utterances with ``test_per`` % of 200 phones as
    edits, spread evenly); ``extra``: more hyperparameter lines."""
    os.makedirs(os.path.join(folder, "save"), exist_ok=True)
    lines = [f"seed: {seed}", f"selection_metric: {metric}", "test_beam_size: 8"]
    lines += ["decode_ctc_weight: 0.4", f"output_folder: {os.path.abspath(folder)}"]
    lines += ["tea_infer_dir: /x/store", "strategy: best"] if kd else []
    lines += [] if kd else [f"teacher_name: {name}"]
    lines += list(extra)
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write("# comment: not a key\n" + "\n".join(lines) + "\n")
    with open(os.path.join(folder, "train_log.txt"), "w") as f:
        f.write(log)
    if edits is None:
        total = round(test_per * 2)
        edits = [total // 10 + (k < total % 10) for k in range(10)]
    path = os.path.join(folder, "per_test.txt")
    write_per_test(path, edits, [20] * len(edits), ctc_per=31.0)
    with open(os.path.join(folder, "save", "model_config.json"), "w") as f:
        json.dump(MODEL_CONFIG, f)
    return str(folder)


def test_train_log_rows_last_occurrence_wins_and_times(tmp_path):
    path = tmp_path / "train_log.txt"
    path.write_text(TRAIN_LOG)
    epochs, test = parse_train_log(str(path))
    assert [row["epoch"] for row in epochs] == [1, 2, 3]
    # Epoch 2 was logged twice (a resumed run): the last line counts.
    assert epochs[1] == {
        "epoch": 2, "valid_PER": 90.0, "valid_CTC_PER": 30.0, "time_s": 31.0,
    }  # fmt: skip
    assert epochs[0]["valid_PER"] == 233.0
    assert test == {"PER": 25.0, "CTC_PER": 31.0, "time_s": 12.0, "epoch": 2}


def test_read_run_selection_metric_picks_the_valid_figure(tmp_path):
    run = read_run(make_run(tmp_path / "a", metric="CTC_PER"))
    assert (run["valid_PER"], run["best_epoch"]) == (30.0, 2)
    assert run["test_PER"] == 25.0 and run["test_CTC_PER"] == 31.0
    # Epoch 2 ran twice (its first checkpoint save was killed): both times count.
    assert run["wall_time_s"] == pytest.approx(30.5 + 29.5 + 31.0 + 29.0 + 12.0)
    assert run["name"] == "tea0" and run["kind"] == "teacher" and run["seed"] == 1000
    assert run["test_search"] == "beam 8 + CTC 0.4"
    # Parameters of the model in model_config.json, counted by building it.
    from mtkd.model import CTCAttentionASR

    model = CTCAttentionASR(**MODEL_CONFIG["model"])
    assert run["parameters"] == sum(p.numel() for p in model.parameters())
    by_attention = read_run(make_run(tmp_path / "b", metric="PER"))
    assert (by_attention["valid_PER"], by_attention["best_epoch"]) == (80.0, 3)


def test_best_epoch_among_ties_is_the_one_the_test_loaded(tmp_path):
    """Epochs 2 and 4 tie at the lowest valid figure; the Checkpointer kept
    epoch 4 and the test loaded it: the summary names that epoch."""
    log = (
        "epoch: 1, time_s: 1.0 - valid PER: 90.00, valid CTC_PER: 40.00\n"
        "epoch: 2, time_s: 1.0 - valid PER: 80.00, valid CTC_PER: 30.00\n"
        "epoch: 3, time_s: 1.0 - valid PER: 70.00, valid CTC_PER: 35.00\n"
        "epoch: 4, time_s: 1.0 - valid PER: 60.00, valid CTC_PER: 30.00\n"
    )
    loaded = "Epoch loaded: {}, time_s: 2.0 - test PER: 25.00, test CTC_PER: 31.00\n"
    run = read_run(make_run(tmp_path / "a", log=log + loaded.format(4)))
    assert (run["valid_PER"], run["best_epoch"]) == (30.0, 4)
    run = read_run(make_run(tmp_path / "b", log=log + loaded.format(2)))
    assert (run["valid_PER"], run["best_epoch"]) == (30.0, 2)
    # A test that loaded none of the tied epochs, or logged none: the first.
    run = read_run(make_run(tmp_path / "c", log=log + "test PER: 25.00\n"))
    assert run["best_epoch"] == 2


def test_read_run_names_kd_students_and_missing_files(tmp_path):
    assert read_run(make_run(tmp_path / "kd", kd=True))["name"] == "student-best"
    folder = make_run(tmp_path / "unfinished")
    os.remove(os.path.join(folder, "per_test.txt"))
    with pytest.raises(ResultsError, match="no per_test.txt"):
        read_run(folder)


def test_seeds_of_one_model_make_one_row_with_mean_and_std(tmp_path):
    base = [
        read_run(make_run(tmp_path / f"b{seed}", "student-baseline", seed, test_per=p))
        for seed, p in ((2001, 22.0), (2000, 20.0), (2002, 30.0))
    ]
    kd = read_run(
        make_run(
            tmp_path / "kd", seed=2000, kd=True, test_per=18.5, extra=["alpha: 0.5"]
        )
    )
    other = read_run(
        make_run(tmp_path / "kd2", seed=2000, kd=True, extra=["alpha: 0.3"])
    )
    groups = group_runs([*base, kd, other])
    assert [g["name"] for g in groups] == [
        "student-baseline", "student-best (alpha=0.5)", "student-best (alpha=0.3)",
    ]  # fmt: skip
    baseline = groups[0]
    assert baseline["seeds"] == [2000, 2001, 2002] and baseline["n"] == 3
    assert baseline["test_PER"]["values"] == [20.0, 22.0, 30.0]  # by seed
    assert baseline["test_PER"]["mean"] == pytest.approx(24.0)
    assert baseline["test_PER"]["std"] == pytest.approx(28**0.5)  # n - 1
    assert groups[1]["test_PER"] == {"mean": 18.5, "std": None, "values": [18.5]}
    row = markdown_table(groups).splitlines()[2]
    assert row.startswith("| student-baseline | 2000-2002 | ")
    assert "| 24.00 ± 5.29 |" in row


def test_the_valid_column_is_named_by_the_selection_metric(tmp_path):
    """Issue 34: one name per figure. Runs selected on greedy CTC (the demo's)
    show "valid CTC PER", as the train log and the progress lines call that
    figure; runs selected on the attention search show "valid PER"."""
    ctc = group_runs([read_run(make_run(tmp_path / "ctc"))])
    attention = group_runs([read_run(make_run(tmp_path / "att", metric="PER"))])
    head = "| model | seeds | parameters | valid CTC PER | test PER | test CTC PER |"
    assert markdown_table(ctc).startswith(head)
    assert markdown_table(attention).startswith(head.replace("valid CTC", "valid"))
    assert runs_table(ctc[0]["runs"]).startswith("| model | seed | valid CTC PER |")
    assert notes(ctc)[0].startswith("valid CTC PER: greedy CTC (the selection metric)")
    assert notes(attention)[0].startswith("valid PER: greedy attention search (")
    # results.json keeps the models without their runs: the name stays.
    models = [{k: v for k, v in g.items() if k != "runs"} for g in ctc]
    assert markdown_table(models) == markdown_table(ctc)


def test_convergence_is_the_change_over_the_last_three_epochs(tmp_path):
    run = read_run(make_run(tmp_path / "three"))  # 3 epochs: no figure
    assert run["valid_change_last3"] is None
    lines = [
        f"epoch: {e}, lr: 2.00e-03, time_s: 1.0 - train loss: 1.0 - valid loss: "
        f"1.0, valid PER: {90 - e}.0, valid CTC_PER: {v}"
        for e, v in enumerate([60.0, 40.0, 30.0, 26.0, 25.0, 24.5], 1)
    ]
    log = "\n".join(lines) + "\nEpoch loaded: 6, time_s: 1.0 - test PER: 20.0\n"
    run = read_run(make_run(tmp_path / "six", log=log))
    assert run["valid_change_last3"] == pytest.approx(24.5 - 30.0)  # epoch 6 - 3
    by_attention = read_run(make_run(tmp_path / "att", log=log, metric="PER"))
    assert by_attention["valid_change_last3"] == pytest.approx(-3.0)
    flat = (
        log.replace("CTC_PER: 26.0", "CTC_PER: 30.0")
        .replace("CTC_PER: 25.0", "CTC_PER: 30.0")
        .replace("CTC_PER: 24.5", "CTC_PER: 29.8")
    )
    converged = read_run(make_run(tmp_path / "flat", "tea9", log=flat))
    assert converged["valid_change_last3"] == pytest.approx(-0.2)
    sentences = notes(group_runs([run, by_attention, converged]))
    assert any(s.startswith("valid change, last 3 epochs:") for s in sentences)
    # Same name, another selection metric: two models. 24.5 after -5.5 is
    # -22.4 %, 84 after -3 is -3.6 %: still learning; 29.8 after -0.2 is not.
    assert sentences[-1] == (
        "Still learning (valid PER down by more than 2 % of its value over the "
        "last 3 epochs): tea0 (selection_metric=CTC_PER) (-22.4 %), "
        "tea0 (selection_metric=PER) (-3.6 %). A comparison with a model still "
        "learning says which got further in these epochs, not which is better "
        "once trained."
    )


def test_verdict_pairs_seeds_and_comes_from_the_test(tmp_path):
    """Baseline seeds 2000 and 2001; the student's seed 2000 has one edit
    fewer on each of 10 utterances of 20 phones (-5 points), its seed 2001 the
    baseline's edits (0): pooled -2.5, and seed i is paired with seed i."""
    edits = [4, 5, 6, 5, 4, 5, 6, 5, 5, 5]
    runs = [
        read_run(make_run(tmp_path / "b0", "student-baseline", 2000, edits=edits)),
        read_run(make_run(tmp_path / "b1", "student-baseline", 2001, edits=edits)),
        read_run(make_run(tmp_path / "k1", seed=2001, kd=True, edits=edits)),
        read_run(
            make_run(tmp_path / "k0", seed=2000, kd=True, edits=[e - 1 for e in edits])
        ),
    ]
    (comparison,) = compare_to_baseline(group_runs(runs))
    assert comparison["pairs"] == [[2000, 2000], [2001, 2001]]
    result = comparison["result"]
    assert result["difference"] == pytest.approx(-2.5)
    assert result["seed_differences"] == pytest.approx([-5.0, 0.0])
    assert re.match(
        r"student-best vs student-baseline: -2\.50 PER points \(-10\.0 % "
        r"relative; 95 % CI -5\.00 to \+0\.00, p = 0\.(4[89]|5[01])\d, "
        r"paired bootstrap over 2 speakers \(10 utterances\) and 2 seeds; "
        r"seed-level t-test p = 0\.500, sign-flip p = 1\.000; ",
        comparison["sentence"],
    )
    assert comparison["sentence"].endswith(
        "lower in 1 of 2 seeds): not shown (2 seeds: a seed-level test needs "
        "at least 3; 6 for a sign-flip test to reach 0.05)."
    )
    assert comparison["student_runs"] == ["student-best@2000", "student-best@2001"]
    assert notes(group_runs(runs), [comparison])[-1] == comparison["sentence"]


def test_summarize_results_finds_runs_below_folders(tmp_path):
    from conftest import run_script

    make_run(tmp_path / "runs" / "tea0" / "1000", name="tea0", test_per=20.0)
    make_run(tmp_path / "runs" / "tea3" / "1003", name="tea3", seed=1003)
    make_run(tmp_path / "runs" / "kd", kd=True, seed=2000, test_per=18.5)
    out = tmp_path / "summary"
    proc = run_script(
        ["summarize_results.py", str(tmp_path / "runs"), "--out", str(out)]
    )
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| model", "| tea0", "| tea3", "| student-best",
    ]  # fmt: skip
    assert "| 20.00 |" in rows[1] and "| 18.50 |" in rows[3]
    result = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in result["runs"]] == ["tea0", "tea3", "student-best"]
    assert (out / "valid_per.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "valid change, last 3 epochs" in (out / "RESULTS.md").read_text()
    bad = run_script(["summarize_results.py", str(tmp_path / "summary")], check=False)
    assert bad.returncode == 2 and "no run folder in it" in bad.stderr


def test_summarize_results_out_naming_a_file_is_one_error(tmp_path):
    """Issue 33: --out naming an existing file ended in a FileExistsError
    traceback after the runs were read."""
    from conftest import run_script

    make_run(tmp_path / "runs" / "tea0" / "1000", name="tea0")
    taken = tmp_path / "summary.md"
    taken.write_text("my notes")
    proc = run_script(
        ["summarize_results.py", str(tmp_path / "runs"), "--out", str(taken)],
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        f"ERROR: output_folder {taken} is a file, not a folder: remove or rename "
        "the file, or give another --output_folder."
    )
    assert taken.read_text() == "my notes"


def test_table_has_one_row_per_model_with_numbers(tmp_path):
    # Each epoch once (no redone epoch): 30.5 + 31 + 29 + 12 = 102.5 s.
    log = "".join(line for line in TRAIN_LOG.splitlines(True) if "29.50" not in line)
    runs = [read_run(make_run(tmp_path / n, name=n, log=log)) for n in ("tea0", "tea9")]
    groups = group_runs(runs)
    lines = markdown_table(groups).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| tea0 | 1000 |")
    # 3 epochs: no change over the last 3; 102.5 s, rounded half to even.
    assert lines[2].endswith("| 30.00 | 25.00 | 31.00 | - | 1 min 42 s |")
    assert any("beam 8 + CTC 0.4" in sentence for sentence in notes(groups))
    assert not any("±" in sentence for sentence in notes(groups))  # one seed


def test_summarize_results_tests_every_student_over_seeds(tmp_path):
    """3 baseline and 3 KD seeds: mean ± std rows, and under them the CI and
    p-value of the student against the baseline."""
    from conftest import run_script

    base = [6, 5, 7, 6, 5, 6, 7, 6, 5, 7]
    for i, seed in enumerate((2000, 2001, 2002)):
        make_run(tmp_path / "runs" / "baseline" / f"seed{seed}", "student-baseline",
                 seed, edits=[e + (i == 2) for e in base])  # fmt: skip
        make_run(tmp_path / "runs" / "best" / f"seed{seed}", seed=seed, kd=True,
                 edits=[e - 2 + (k == i) for k, e in enumerate(base)])  # fmt: skip
    out = tmp_path / "summary"
    proc = run_script(
        ["summarize_results.py", str(tmp_path / "runs"), "--out", str(out)]
    )
    model_table = proc.stdout.split("Every run:")[0]
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")
        for line in model_table.splitlines()
        if line.startswith("| student")
    }
    # Model table: baseline 30.0, 30.0, 35.0 % -> 31.67 ± 2.89; best: 20.5 each.
    assert rows["student-baseline"][1:2] == ["2000-2002"]
    assert rows["student-baseline"][4] == "31.67 ± 2.89"
    assert rows["student-best"][4] == "20.50 ± 0.00"
    assert re.search(
        r"student-best vs student-baseline: -11\.17 PER points \(-35\.3 % relative; "
        r"95 % CI -1\d\.\d\d to -\d+\.\d\d, p < 0\.001, paired bootstrap over "
        r"2 speakers \(10 utterances\) and 3 seeds; seed-level t-test "
        r"p = 0\.0\d\d, sign-flip p = 0\.250; lower in 3 of 3 seeds\): lower "
        r"PER than student-baseline\.",
        proc.stdout,
    )
    result = json.loads((out / "results.json").read_text())
    models = {m["name"]: m for m in result["models"]}
    assert models["student-baseline"]["test_PER"]["values"] == [30.0, 30.0, 35.0]
    assert models["student-best"]["seeds"] == [2000, 2001, 2002]
    (comparison,) = result["comparisons"]
    assert comparison["pairs"] == [[2000, 2000], [2001, 2001], [2002, 2002]]
    assert comparison["result"]["p_value"] < 0.001
    assert "Every run:" in (out / "RESULTS.md").read_text()
    # The per-utterance edits of every run, from which the line is recomputed.
    from mtkd_tools.significance import read_utterances

    counts = read_utterances(out / "utterances.json")
    assert sorted(counts) == [f"student-{m}@{s}" for m in ("baseline", "best")
                              for s in (2000, 2001, 2002)]  # fmt: skip
    assert list(counts["student-best@2000"]["edits"]) == [
        e - 2 + (k == 0) for k, e in enumerate(base)
    ]


def test_cpu_model_names_the_cpu_and_falls_back_to_platform(monkeypatch):
    """mtkd_tools.machine.cpu_model: /proc/cpuinfo's model name where there
    is one (what every results file records), else platform's word."""
    import builtins
    import platform

    from mtkd_tools.machine import cpu_model

    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [x for x in f if x.startswith("model name")]
        if names:
            assert cpu_model() == names[0].split(":", 1)[1].strip()
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise OSError("no such file")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    assert cpu_model() == (platform.processor() or platform.machine())
