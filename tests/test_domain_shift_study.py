"""tools/domain_shift_study.py: labels from one synthesiser, the unlabelled
pool and the test from the other. Its plan (runs, settings, manifests, the
second test), its manifests on the tiny mixed corpus, the error for a corpus
of one synthesiser, and its summary of finished runs."""

import json
import os
import shutil
import sys

import pytest
from conftest import REPO, run_script
from test_results import make_run

sys.path.insert(0, os.path.join(REPO, "tools"))
import domain_shift_study as study  # noqa: E402
import kd_study  # noqa: E402

ROWS = ["baseline-matched", "pseudo-matched", "weighted-1x", "oracle-1x"]


def plan(tmp_path, *argv):
    args = study.parse_args(["--output_folder", str(tmp_path), "--plan", *argv])
    return args, study.build_jobs(args, str(tmp_path / "TIMIT"))


def flag(job, key):
    return job.argv[job.argv.index(f"--{key}") + 1]


def test_plan_of_the_rows(tmp_path):
    """Teachers, the store and its part over the pool, the consensus check,
    then the four rows seed by seed; every run learns from the eSpeak NG
    manifests and is tested on Flite's, then decoded on eSpeak NG's test in
    a copy of its folder."""
    args, jobs = plan(tmp_path, "--seeds", "2")
    names = [job.name for job in jobs]
    assert names[:6] == ["tea0", "tea3", "tea5"] + [
        f"tea{k}@test-espeak" for k in (0, 3, 5)
    ]
    assert names[6:9] == ["store-t3-T1", "store-t3-T1-unlabelled", "consensus"]
    assert names[9:] == [
        f"{row}/seed{i}{suffix}"
        for i in range(2)
        for row in ROWS
        for suffix in ("", "@test-espeak")
    ]
    assert len({job.folder for job in jobs}) == len(jobs)
    by_name = {job.name: job for job in jobs}
    m = tmp_path / "manifests"
    for job in jobs[:8] + jobs[9:]:
        assert flag(job, "skip_prep") == "True"
        assert flag(job, "valid_annotation") == str(m / "valid-espeak.json")
        test = "test-espeak" if "@test-" in job.name else "test-flite"
        assert flag(job, "test_annotation") == str(m / f"{test}.json")
        if not job.name.startswith("oracle"):
            assert flag(job, "train_annotation") == str(m / "train-espeak.json")
    # the rows, with kd_study's settings
    base = by_name["baseline-matched/seed1"]
    assert base.argv[0] == "train_teacher.py" and base.after == []
    assert flag(base, "number_of_epochs") == "30"  # twice the students' 15
    assert flag(base, "seed") == "2001" and flag(base, "rnn_neurons") == "64"
    pseudo, kd = by_name["pseudo-matched/seed0"], by_name["weighted-1x/seed0"]
    for job, unlabelled_alpha in ((pseudo, "0.0"), (kd, "1.0")):
        assert job.argv[0] == "train_kd.py"
        assert flag(job, "strategy") == "weighted" and flag(job, "alpha") == "0.5"
        assert flag(job, "unlabelled_alpha") == unlabelled_alpha
        assert flag(job, "unlabelled") == str(m / "pool-flite.json")
        assert flag(job, "number_of_epochs") == "15"
        assert job.after == ["store-t3-T1", "store-t3-T1-unlabelled"]
        assert flag(job, "tea_infer_dir") == str(tmp_path / "stores/store-t3-T1/store")
    oracle = by_name["oracle-1x/seed0"]
    assert oracle.argv[0] == "train_teacher.py"
    assert flag(oracle, "train_annotation") == str(m / "oracle.json")
    assert flag(oracle, "number_of_epochs") == "15"
    part = by_name["store-t3-T1-unlabelled"]
    assert flag(part, "unlabelled") == str(m / "pool-flite.json")
    assert part.done_file.endswith("store/unlabelled-t000-t002.h5")
    consensus = by_name["consensus"]
    assert consensus.argv[0] == "tools/consensus_quality.py"
    assert flag(consensus, "oracle") == str(m / "oracle.json")
    # the second test: the same command in a copy, after the run
    copy = by_name["weighted-1x/seed0@test-espeak"]
    assert copy.after == ["weighted-1x/seed0"]
    assert copy.folder == str(tmp_path / "test-espeak/students/weighted-1x/seed0")
    assert flag(copy, "output_folder") == copy.folder
    assert [
        a for a in copy.argv if a not in (copy.folder, flag(copy, "test_annotation"))
    ] == [a for a in kd.argv if a not in (kd.folder, flag(kd, "test_annotation"))]
    assert not os.listdir(tmp_path)  # --plan makes nothing


def test_the_rows_are_kd_studys_configurations():
    for row in ROWS:
        assert row in kd_study.CONFIGS
    assert kd_study.CONFIGS["weighted-1x"][4]["unlabelled_alpha"] == 1.0
    assert kd_study.CONFIGS["pseudo-matched"][4]["unlabelled_alpha"] == 0.0
    assert kd_study.matched_epochs(15, "1x") == 30


def test_plan_the_other_way_round_and_from_the_command_line(tmp_path):
    _, jobs = plan(tmp_path, "--labelled", "flite", "--seeds", "1",
                   "--rows", "weighted-1x")  # fmt: skip
    kd = next(job for job in jobs if job.name == "weighted-1x/seed0")
    m = tmp_path / "manifests"
    assert flag(kd, "train_annotation") == str(m / "train-flite.json")
    assert flag(kd, "test_annotation") == str(m / "test-espeak.json")
    assert flag(kd, "unlabelled") == str(m / "pool-espeak.json")
    assert [j.name for j in jobs][-1] == "weighted-1x/seed0@test-flite"
    proc = run_script(
        ["tools/domain_shift_study.py", "--plan", "--output_folder",
         str(tmp_path / "cli"), "--seeds", "1", "--quick"]
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert len(lines) == 9 + 8 and all(line.startswith("to run ") for line in lines)
    assert "--rnn_neurons 16" in lines[-1] and "--test_beam_size 2" in lines[-1]
    assert not (tmp_path / "cli").exists()


def test_manifests_split_the_families(mini_mixed_corpus, tmp_path):
    """Labelled eSpeak NG: train, valid and the second test from its
    speakers; the pool (without phones) and the test from Flite's; the
    oracle is train + the pool with its true phones."""
    paths = study.make_manifests(str(tmp_path), mini_mixed_corpus, "espeak", print)
    families = study.speaker_families(mini_mixed_corpus)
    data = {}
    for role, path in paths.items():
        with open(path, encoding="utf-8") as f:
            data[role] = json.load(f)
    want = {"train": "espeak", "valid": "espeak", "home_test": "espeak",
            "test": "flite", "pool": "flite"}  # fmt: skip
    for role, family in want.items():
        speakers = {entry["spk_id"] for entry in data[role].values()}
        assert speakers and {families[s] for s in speakers} == {family}, role
    assert len(data["train"]) == len(data["pool"]) == 24  # 3 speakers x 8
    assert (len(data["valid"]), len(data["test"]), len(data["home_test"])) == (8, 8, 8)
    assert all("phn" not in entry for entry in data["pool"].values())
    assert set(data["oracle"]) == set(data["train"]) | set(data["pool"])
    all_train = tmp_path / "manifests" / "all-train.json"
    truth = json.loads(all_train.read_text())
    assert all(data["oracle"][u]["phn"] == truth[u]["phn"] for u in data["oracle"])
    assert sorted(os.path.basename(p) for p in paths.values()) == [
        "oracle.json", "pool-flite.json", "test-espeak.json", "test-flite.json",
        "train-espeak.json", "valid-espeak.json",
    ]  # fmt: skip


def test_a_corpus_of_one_synthesiser_is_refused(mini_corpus, tmp_path):
    """The eSpeak NG corpus has no Flite speaker: an ERROR naming the split
    and the preset to make, no traceback, no run started."""
    out = tmp_path / "study"
    shutil.copytree(mini_corpus, out / "TIMIT")
    proc = run_script(
        ["tools/domain_shift_study.py", "--output_folder", str(out), "--quick"],
        check=False,
    )
    assert proc.returncode == 2
    assert "ERROR: " in proc.stderr and "Traceback" not in proc.stderr
    assert "no Flite speaker in its train split" in proc.stderr
    assert "--preset demo_core_mixed" in proc.stderr
    assert not (out / "teachers").exists()
    with pytest.raises(study.DomainShiftError, match="MINI_TIMIT.json: missing"):
        study.speaker_families(str(tmp_path))


def test_summary_of_finished_runs(tmp_path):
    """Fabricated finished runs: the table has both tests; the rows are
    compared with each other on each; the consensus sentence is there."""
    args, jobs = plan(tmp_path, "--seeds", "2", "--docs_folder", str(tmp_path / "docs"))
    edits = {"baseline-matched": (14, 6), "pseudo-matched": (12, 6),
             "weighted-1x": (10, 6), "oracle-1x": (4, 5)}  # fmt: skip
    for job in jobs:
        row = job.name.split("/")[0].split("@")[0]
        if row.startswith("store") or row == "consensus":
            continue
        home = "@test-" in job.name
        i = int(job.name.split("seed")[1][0]) if "seed" in job.name else 0
        per_utt = edits.get(row, (8, 4))[home]
        make_run(job.folder, name=row, seed=2000 + i, kd=row in edits and "1x" in row,
                 edits=[per_utt + (k % 2) for k in range(10)])  # fmt: skip
    os.makedirs(os.path.dirname(study.consensus_path(str(tmp_path))))
    with open(study.consensus_path(str(tmp_path)), "w") as f:
        json.dump({"valid": {"consensus": 7.5, "teachers": [8.0, 9.0, 12.0]},
                   "unlabelled": {"consensus": 61.2,
                                  "teachers": [60.0, 65.0, 70.0]}}, f)  # fmt: skip
    study.summarize(args, jobs, lambda text: None)
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert (
        "| model | seeds | parameters | valid PER (espeak) | test PER, Flite " in text
    )
    assert "| weighted-1x | 2000, 2001 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| weighted-1x"))
    assert row.endswith("| 52.50 ± 0.00 | 32.50 ± 0.00 |")
    assert "61.20 % on the pool (Flite" in text and "7.50 % PER on valid" in text
    assert "Share of the gap between the baseline and the oracle closed" in text
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["test"]["comparisons"]}
    assert set(compared) == set(study.COMPARISONS)
    assert compared[("weighted-1x", "baseline-matched")]["result"][
        "difference"
    ] == pytest.approx(-20.0)
    home = {(c["name"], c["baseline"]): c for c in result["home_test"]["comparisons"]}
    assert home[("weighted-1x", "baseline-matched")]["result"]["difference"] == 0
    for name in ("utterances.json", "utterances-test-espeak.json"):
        assert (tmp_path / "docs" / name).is_file()
