"""mtkd.results and summarize_results.py: figures read from run folders."""

import json
import os

import pytest

from mtkd.results import (
    ResultsError,
    markdown_table,
    notes,
    parse_train_log,
    read_run,
    spread,
    student_comparison,
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
             log=TRAIN_LOG, kd=False):  # fmt: skip
    """A finished run folder as the scripts leave it (files that matter)."""
    os.makedirs(os.path.join(folder, "save"), exist_ok=True)
    lines = [f"seed: {seed}", f"selection_metric: {metric}", "test_beam_size: 8"]
    lines += ["decode_ctc_weight: 0.4"]
    lines += ["tea_infer_dir: /x/store", "strategy: best"] if kd else []
    lines += [] if kd else [f"teacher_name: {name}"]
    with open(os.path.join(folder, "hyperparams.yaml"), "w") as f:
        f.write("# comment: not a key\n" + "\n".join(lines) + "\n")
    with open(os.path.join(folder, "train_log.txt"), "w") as f:
        f.write(log)
    with open(os.path.join(folder, "per_test.txt"), "w") as f:
        f.write(f"PER: {test_per:.2f}  CTC_PER: 31.00\n\n%WER ...\n")
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
    assert test == {"PER": 25.0, "CTC_PER": 31.0, "time_s": 12.0}


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


def test_read_run_names_kd_students_and_missing_files(tmp_path):
    assert read_run(make_run(tmp_path / "kd", kd=True))["name"] == "student-best"
    folder = make_run(tmp_path / "unfinished")
    os.remove(os.path.join(folder, "per_test.txt"))
    with pytest.raises(ResultsError, match="no per_test.txt"):
        read_run(folder)


def test_spread_and_student_verdicts():
    def run(name, per, kind):
        return {"name": name, "test_PER": per, "kind": kind}

    runs = [
        run("tea0", 20.0, "teacher"), run("tea3", 24.0, "teacher"),
        run("tea5", 22.0, "teacher"), run("student-baseline", 30.0, "student"),
        run("student-best", 27.0, "student"), run("student-average", 29.0, "student"),
    ]  # fmt: skip
    s = spread(runs)
    assert (s["n"], s["min"], s["max"], s["range"]) == (3, 20.0, 24.0, 4.0)
    assert s["stdev"] == pytest.approx(2.0)  # sample stdev of 20, 22, 24
    verdicts = student_comparison(runs, s)
    assert verdicts == [("student-best", -3.0, True), ("student-average", -1.0, False)]
    # With two teachers the range (4) is the yardstick.
    two = spread(runs[:2])
    assert two["stdev"] is None
    assert student_comparison(runs, two)[0] == ("student-best", -3.0, False)


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
    assert "Teachers' test PER spread over 2" in (out / "RESULTS.md").read_text()
    bad = run_script(["summarize_results.py", str(tmp_path / "summary")], check=False)
    assert bad.returncode == 2 and "no run folder in it" in bad.stderr


def test_table_has_one_row_per_run_with_numbers(tmp_path):
    # Each epoch once (no redone epoch): 30.5 + 31 + 29 + 12 = 102.5 s.
    log = "".join(line for line in TRAIN_LOG.splitlines(True) if "29.50" not in line)
    runs = [read_run(make_run(tmp_path / n, name=n, log=log)) for n in ("tea0", "tea9")]
    lines = markdown_table(runs).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| tea0 | 1000 |")
    assert "1 min 42 s" in lines[2]  # 102.5 s, rounded half to even
    assert any("beam 8 + CTC 0.4" in sentence for sentence in notes(runs))
