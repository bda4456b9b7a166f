"""run_demo.py --quick: the whole pipeline from a fresh folder, as users run it."""

import json
import os
import re

import pytest
from conftest import run_script

from mtkd.results import top_level_values

TEACHERS = ["tea0", "tea3"]
STUDENTS = ["student-baseline", "student-average", "student-best", "student-weighted"]
# Keys that name where a run writes, not how it trains.
PATH_KEYS = {
    "output_folder", "save_folder", "train_log", "test_per_file", "teacher_name",
    "train_annotation", "valid_annotation", "test_annotation",
}  # fmt: skip


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    proc = run_script(["run_demo.py", "--quick", "--output_folder", str(out)])
    return out, proc


def table_rows(markdown):
    """{model: [cells]} of the results table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("model",):
            rows[cells[0]] = cells
    return rows


def test_quick_demo_table_has_a_number_for_every_model(quick_demo):
    out, proc = quick_demo
    rows = table_rows((out / "RESULTS.md").read_text())
    assert list(rows) == TEACHERS + STUDENTS
    for name, cells in rows.items():
        # model | seed | parameters | valid PER | test PER | test CTC PER |
        # wall time | checkpoint | RTF (CPU)
        valid, test, test_ctc = (float(c) for c in cells[3:6])
        assert valid >= 0 and test >= 0 and test_ctc >= 0, name
        assert re.fullmatch(r"(\d+ min )?\d+ s", cells[6]), cells[6]
        assert float(cells[7].removesuffix(" MB")) > 0 and float(cells[8]) > 0
    # The table is printed too, and the students are smaller than the teachers.
    assert table_rows(proc.stdout) == rows
    result = json.loads((out / "results.json").read_text())
    by_name = {run["name"]: run for run in result["runs"]}
    assert max(by_name[s]["parameters"] for s in STUDENTS) < min(
        by_name[t]["parameters"] for t in TEACHERS
    )
    assert len(by_name["tea0"]["epochs"]) == 1  # --quick: one epoch each
    assert result["teacher_spread"]["n"] == 2
    assert (out / "valid_per.png").read_bytes()[:4] == b"\x89PNG"
    assert "student-best vs student-baseline" in (out / "RESULTS.md").read_text()


def test_students_differ_from_the_baseline_by_distillation_only(quick_demo):
    out, _ = quick_demo
    folders = {
        "baseline": out / "students" / "baseline",
        **{s: out / "students" / s for s in ("average", "best", "weighted")},
    }
    values = {
        k: top_level_values(str(f / "hyperparams.yaml")) for k, f in folders.items()
    }
    base = values["baseline"]
    for strategy in ("average", "best", "weighted"):
        kd = values[strategy]
        shared = (set(base) & set(kd)) - PATH_KEYS
        assert {"lr", "seed", "ctc_weight", "dropout", "rnn_neurons"} <= shared
        assert {k: kd[k] for k in shared} == {k: base[k] for k in shared}, strategy
        assert kd["strategy"] == strategy and kd["alpha"] == "0.5"
    # The teachers' list file names each teacher's best checkpoint.
    lines = (out / "teachers.txt").read_text().splitlines()[1:]
    assert [os.path.basename(p) for p in lines] == ["model.ckpt"] * len(TEACHERS)
    assert all(os.path.isfile(p) for p in lines)


def test_rerun_redoes_nothing_and_other_options_are_refused(quick_demo):
    out, _ = quick_demo
    mtime = os.path.getmtime(out / "teachers" / "tea0" / "per_test.txt")
    again = run_script(["run_demo.py", "--quick", "--output_folder", str(out)])
    assert again.stdout.count(": already done") == len(TEACHERS) + len(STUDENTS) + 1
    assert " start\n" not in again.stdout
    assert os.path.getmtime(out / "teachers" / "tea0" / "per_test.txt") == mtime
    other = run_script(
        [
            "run_demo.py",
            "--quick",
            "--output_folder",
            str(out),
            "--teacher_epochs",
            "3",
        ],
        check=False,
    )
    assert other.returncode == 2
    assert "was made by another command" in other.stderr
    assert "--output_folder" in other.stderr
