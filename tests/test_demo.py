"""run_demo.py --quick: the whole pipeline from a fresh folder, as users run it."""

import json
import os
import re

import pytest
from conftest import run_script

from mtkd_tools.results import top_level_values

TEACHERS = ["tea0", "tea3"]

# The quick demo end to end (about 3 min on 2 cores): .ci/run runs it after the
# default suite, with `pytest -m slow`.
pytestmark = pytest.mark.slow
# The demo's default students. Two KD students fill the two job slots in one
# round (a third would add a round to the suite's longest fixture); average
# is trained by tests/test_train_kd.py.
STUDENTS = ["student-baseline", "student-best", "student-weighted"]
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
    # A smoke run says so before its table (issue 24).
    assert (
        "Smoke run (`--quick`): these figures are not results."
        in ((out / "RESULTS.md").read_text().split("|")[0])
    )
    for name, cells in rows.items():
        # model | seeds | parameters | valid PER | test PER | test CTC PER |
        # valid change, last 3 epochs | wall time per run | checkpoint | RTF (CPU)
        valid, test, test_ctc = (float(c) for c in cells[3:6])
        assert valid >= 0 and test >= 0 and test_ctc >= 0, name
        assert cells[6] == "-"  # one epoch: no change over the last 3
        assert re.fullmatch(r"(\d+ min )?\d+ s", cells[7]), cells[7]
        assert float(cells[8].removesuffix(" MB")) > 0 and float(cells[9]) > 0
    # The table is printed too, and the students are smaller than the teachers.
    assert table_rows(proc.stdout) == rows
    result = json.loads((out / "results.json").read_text())
    by_name = {run["name"]: run for run in result["runs"]}
    assert max(by_name[s]["parameters"] for s in STUDENTS) < min(
        by_name[t]["parameters"] for t in TEACHERS
    )
    assert len(by_name["tea0"]["epochs"]) == 1  # --quick: one epoch each
    assert (out / "valid_per.png").read_bytes()[:4] == b"\x89PNG"
    # Every distilled student tested against the baseline, seed 2000 vs 2000,
    # on the 16 test utterances of the tiny corpus.
    comparisons = {c["name"]: c for c in result["comparisons"]}
    assert sorted(comparisons) == sorted(STUDENTS[1:])
    for name, comparison in comparisons.items():
        assert comparison["pairs"] == [[2000, 2000]]
        assert comparison["result"]["n_utterances"] == 16
        assert 0 < comparison["result"]["p_value"] <= 1
        assert comparison["sentence"] in (out / "RESULTS.md").read_text()
        assert comparison["sentence"].startswith(f"{name} vs student-baseline: ")


def test_students_differ_from_the_baseline_by_distillation_only(quick_demo):
    out, _ = quick_demo
    folders = {
        s: out / "students" / s / "seed2000" for s in ("baseline", "best", "weighted")
    }
    values = {
        k: top_level_values(str(f / "hyperparams.yaml")) for k, f in folders.items()
    }
    base = values["baseline"]
    for strategy in ("best", "weighted"):
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
    # --cost_files 0: the size/RTF measurement is not a run, and takes time.
    again = run_script(
        ["run_demo.py", "--quick", "--output_folder", str(out), "--cost_files", "0"]
    )
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


def test_seeds_give_each_student_run_its_own_folder_and_seed(tmp_path):
    """--seeds 2: the teachers and the store once, the baseline and the
    default KD students (best, weighted) at seeds 2000 and 2001, no two runs
    in one folder."""
    import run_demo

    args = run_demo.parse_args(
        ["--quick", "--seeds", "2", "--output_folder", str(tmp_path / "d")]
    )
    jobs = run_demo.build_jobs(args, str(tmp_path / "TIMIT"))
    names = [job.name for job in jobs]
    assert names[:2] == TEACHERS and names.count("save_teachers") == 1
    students = [job for job in jobs if job.name.startswith("student-")]
    assert len(students) == 6 and len({job.folder for job in jobs}) == len(jobs)
    for job in students:
        strategy, seed = re.fullmatch(r"student-(\w+)-seed(\d+)", job.name).groups()
        assert job.folder == str(tmp_path / "d" / "students" / strategy / f"seed{seed}")
        assert job.argv[job.argv.index("--seed") + 1] == seed
        assert strategy in ("baseline", "best", "weighted")
        assert job.after == ([] if strategy == "baseline" else ["save_teachers"])
    assert sorted({job.name.rsplit("seed", 1)[1] for job in students}) == [
        "2000", "2001",
    ]  # fmt: skip
    # The teachers keep their own seeds whatever --seeds says.
    assert [job.argv[job.argv.index("--seed") + 1] for job in jobs[:2]] == [
        "1000", "1003",
    ]  # fmt: skip


def test_strategies_choose_the_distilled_students(tmp_path, capsys):
    """--strategies picks which KD students are trained; one named twice or
    an unknown one is an argparse error that names it."""
    import run_demo

    out = str(tmp_path / "d")
    args = run_demo.parse_args(["--quick", "--output_folder", out])
    assert args.strategies == ["best", "weighted"]
    args = run_demo.parse_args(["--output_folder", out, "--strategies", "top-k"])
    names = [job.name for job in run_demo.build_jobs(args, str(tmp_path))]
    assert [n for n in names if n.startswith("student-")] == [
        "student-baseline-seed2000", "student-top-k-seed2000",
    ]  # fmt: skip
    for wrong, message in (("best best", "names one twice: best best"),
                           ("median", "invalid choice: 'median'")):  # fmt: skip
        with pytest.raises(SystemExit):
            run_demo.parse_args(["--strategies", *wrong.split()])
        assert message in capsys.readouterr().err


def test_an_older_demo_folder_is_not_reused(tmp_path):
    """An output folder from before --seeds or with the old demo corpus is an
    error that says what to do, not a silent reuse of its runs."""
    old = tmp_path / "old"
    (old / "students" / "baseline").mkdir(parents=True)
    (old / "students" / "baseline" / "hyperparams.yaml").write_text("seed: 2000\n")
    proc = run_script(["run_demo.py", "--output_folder", str(old)], check=False)
    assert proc.returncode == 2 and "older run_demo.py" in proc.stderr
    assert "--output_folder" in proc.stderr
    corpus = tmp_path / "other" / "TIMIT"
    corpus.mkdir(parents=True)
    options = {"generator": "mtkd.mini_timit", "preset": "demo", "seed": 1234}
    (corpus / "MINI_TIMIT.json").write_text(json.dumps({"options": options}))
    proc = run_script(
        ["run_demo.py", "--output_folder", str(tmp_path / "other")], check=False
    )
    assert proc.returncode == 2 and "made with other options" in proc.stderr
    assert "'demo_core'" in proc.stderr and "--output_folder" in proc.stderr


def test_valid_decode_scores_the_kept_checkpoints_on_valid(quick_demo, tmp_path):
    """tools/valid_decode.py: each run's own command in a copy of its folder,
    tested on valid; the original run is left as it was."""
    out, _ = quick_demo
    runs = [out / "students" / s / "seed2000" for s in ("baseline", "best")]
    before = [(r / "per_test.txt").read_text() for r in runs]
    proc = run_script(
        ["tools/valid_decode.py", "--out", str(tmp_path / "v"), "--baseline",
         "baseline", *map(str, runs)]
    )  # fmt: skip
    assert [(r / "per_test.txt").read_text() for r in runs] == before
    valid_ids = set(json.loads((runs[0] / "valid.json").read_text()))
    for strategy in ("baseline", "best"):
        copy = tmp_path / "v" / strategy / "seed2000"
        scored = re.findall(r"^(\S+), %WER", (copy / "per_test.txt").read_text(), re.M)
        assert set(scored) == valid_ids, strategy
        assert "Epoch loaded: 1" in (copy / "train_log.txt").read_text()
    rows = table_rows((tmp_path / "v" / "RESULTS.md").read_text())
    assert list(rows) == ["baseline", "best"] and rows["best"][1] == "1"
    assert "- best vs baseline: " in proc.stdout
    edits = json.loads((tmp_path / "v" / "utterances.json").read_text())
    assert set(edits["runs"]) == {"baseline/seed2000", "best/seed2000"}
    assert set(edits["ids"]) == valid_ids
    assert all(len(e) == len(valid_ids) for e in edits["runs"].values())
    # An unfinished run is refused before anything is decoded.
    unfinished = tmp_path / "unfinished" / "seed0"
    unfinished.mkdir(parents=True)
    bad = run_script(
        ["tools/valid_decode.py", "--out", str(tmp_path / "w"), str(unfinished)],
        check=False,
    )
    assert bad.returncode == 2 and "has not finished" in bad.stderr
    assert not (tmp_path / "w").exists()


def test_unlabelled_demo_adds_the_pool_and_a_self_training_student(tmp_path):
    """--unlabelled: a pool as large as train beside the corpus, the store's
    unlabelled part, every distilled student on train + the pool, and the
    self-training student, named student-pseudo in the table."""
    out = tmp_path / "unlabelled"
    run_script(["run_demo.py", "--quick", "--unlabelled", "--output_folder", str(out)])
    pool = out / "TIMIT" / "POOL"
    assert json.loads((pool / "MINI_POOL.json").read_text())["summary"]["speakers"] == 6
    store = out / "save_teachers" / "store"
    assert (store / "unlabelled-t000-t001.h5").is_file()
    text = (out / "RESULTS.md").read_text()
    assert list(table_rows(text)) == TEACHERS + STUDENTS + ["student-pseudo"]
    assert "student-pseudo vs student-baseline" in text
    # The matched controls: pseudo differs from weighted in unlabelled_alpha
    # alone; the baseline trains twice the epochs (as many updates).
    for name, alphas in (("weighted", ("0.5", "1.0")), ("pseudo", ("0.5", "0.0"))):
        folder = out / "students" / name / "seed2000"
        seen = json.loads((folder / "data_seen.json").read_text())
        assert seen["labelled"]["utterances"] == 48
        assert (
            seen["unlabelled"]["utterances"] + seen["unlabelled_empty_consensus"] == 48
        )
        values = top_level_values(str(folder / "hyperparams.yaml"))
        assert values["unlabelled"] == str(pool)
        assert (values["alpha"], values["unlabelled_alpha"]) == alphas
        assert values["number_of_epochs"] == "1"
    baseline = out / "students" / "baseline" / "seed2000" / "hyperparams.yaml"
    assert top_level_values(str(baseline))["number_of_epochs"] == "2"
    assert "every student takes the same number of optimiser updates" in text
