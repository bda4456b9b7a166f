"""tools/kd_study.py: the study's plan (runs, seeds, stores, order) and its
summary (each configuration against the baseline of its own size)."""

import json
import os
import sys

import pytest
from conftest import REPO
from test_results import TRAIN_LOG, make_run

sys.path.insert(0, os.path.join(REPO, "tools"))
import kd_study  # noqa: E402


def plan(tmp_path, *argv):
    args = kd_study.parse_args(["--output_folder", str(tmp_path), "--plan", *argv])
    return args, kd_study.build_jobs(args, str(tmp_path / "TIMIT"))


def flag(job, key):
    return job.argv[job.argv.index(f"--{key}") + 1]


def test_plan_of_the_core_group(tmp_path):
    _, jobs = plan(tmp_path, "--groups", "core", "--seeds", "3")
    names = [job.name for job in jobs]
    # The three demo teachers, their store, then whole seeds, one after another.
    assert names[:4] == ["tea0", "tea3", "tea5", "store-t3-T1"]
    assert names[4:] == [
        f"{config}/seed{i}"
        for i in range(3)
        for config in ("baseline", "average", "best", "weighted")
    ]
    by_name = {job.name: job for job in jobs}
    assert by_name["store-t3-T1"].after == ["tea0", "tea3", "tea5"]
    for i in range(3):
        baseline, best = by_name[f"baseline/seed{i}"], by_name[f"best/seed{i}"]
        # Seed i of a distilled student and of its baseline: the same seed.
        assert flag(baseline, "seed") == flag(best, "seed") == str(2000 + i)
        assert baseline.argv[0] == "train_teacher.py" and baseline.after == []
        assert best.argv[0] == "train_kd.py" and best.after == ["store-t3-T1"]
        assert flag(best, "strategy") == "best" and flag(best, "alpha") == "0.5"
        assert flag(best, "rnn_neurons") == flag(baseline, "rnn_neurons") == "64"
    # Teachers keep their own seeds and differences; augmentation off.
    assert flag(by_name["tea3"], "seed") == "1003"
    assert flag(by_name["tea0"], "augment") == "false"


def test_plan_of_the_other_groups(tmp_path):
    _, jobs = plan(tmp_path, "--seeds", "1")
    by_name = {job.name: job for job in jobs}
    assert len(by_name) == len(jobs)  # no two runs share a name or folder
    assert len({job.folder for job in jobs}) == len(jobs)
    # Three stores: 3 teachers at T = 1 and 2, all 10 teachers at T = 1; the
    # unlabelled part of the first; the generations' stores (one per seed).
    stores = [job for job in jobs if job.name.startswith("store-")]
    assert [s.name for s in stores] == [
        "store-t3-T1", "store-t3-T2", "store-t10-T1", "store-t3-T1-unlabelled-4x",
        "store-t3+gen1-4x-T1-seed0", "store-t3+gen2-4x-T1-seed0",
        "store-gen1-4x-T1-seed0",
    ]  # fmt: skip
    assert flag(stores[1], "temperature") == "2.0"
    assert stores[2].after == [f"tea{k}" for k in range(10)]
    hinton = by_name["best-T2-soft/seed0"]
    assert flag(hinton, "temperature") == "2.0"
    assert flag(hinton, "soften_student") == "true"
    assert hinton.after == ["store-t3-T2"]
    assert flag(by_name["best-attention-only/seed0"], "distill_ctc") == "false"
    assert flag(by_name["weighted-tau5/seed0"], "weight_temperature") == "5.0"
    assert flag(by_name["best-alpha0.8/seed0"], "alpha") == "0.8"
    small = by_name["best-small/seed0"], by_name["baseline-small/seed0"]
    assert [flag(job, "rnn_neurons") for job in small] == ["36", "36"]
    assert by_name["weighted-10teachers/seed0"].after == ["store-t10-T1"]
    # Groups in order: stopping early leaves whole groups; iterate last.
    names = [job.name for job in jobs]
    assert names.index("weighted-10teachers/seed0") < names.index(
        "paper-labels-only/seed0"
    )
    assert names.index("paper-weighted-10teachers/seed0") < names.index(
        "pseudo-1x/seed0"
    )
    assert names.index("pseudo-matched/seed0") < names.index("gen1-4x/seed0")
    assert jobs[-1].name == "teacher-tea3/seed0"


def test_plan_of_the_paper_group(tmp_path):
    """The paper's setting: tea0's architecture and encoder, alpha 1, and its
    control, the same run with alpha 0 (labels only)."""
    args, jobs = plan(tmp_path, "--groups", "paper", "--finetune_epochs", "7")
    by_name = {job.name: job for job in jobs}
    tea0 = by_name["tea0"]
    control = by_name["paper-labels-only/seed1"]
    for name in ("paper-labels-only", "paper-best", "paper-weighted-alpha0.5"):
        job = by_name[f"{name}/seed1"]
        assert job.argv[0] == "train_kd.py"
        assert flag(job, "pretrain") == "true"
        assert flag(job, "pretrain_st_dir") == tea0.folder
        assert "tea0" in job.after and "store-t3-T1" in job.after
        assert flag(job, "number_of_epochs") == "7"
        assert flag(job, "lr") == str(kd_study.PAPER_LR)
        assert flag(job, "seed") == "2001"
        for key in ("rnn_neurons", "rnn_layers", "dnn_neurons", "dec_neurons"):
            assert flag(job, key) == flag(tea0, key)  # as large as tea0
    assert flag(control, "alpha") == "0.0"
    assert flag(by_name["paper-best/seed1"], "alpha") == "1.0"
    assert flag(by_name["paper-weighted-alpha0.5/seed1"], "alpha") == "0.5"
    ten = by_name["paper-best-10teachers/seed0"]
    assert "store-t10-T1" in ten.after and flag(ten, "strategy") == "best"
    assert kd_study.baseline_of("paper-best") == "paper-labels-only"
    assert "--finetune_epochs 7" in kd_study.study_command(args)


def test_plan_of_chosen_models_and_an_unknown_one(tmp_path):
    _, jobs = plan(tmp_path, "--groups", "core", "--models", "baseline", "best")
    assert [job.name for job in jobs] == [
        "tea0", "tea3", "tea5", "store-t3-T1",
        *[f"{m}/seed{i}" for i in range(3) for m in ("baseline", "best")],
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        kd_study.main(["--output_folder", str(tmp_path), "--groups", "core",
                       "--models", "best", "top-k", "--plan"])  # fmt: skip
    assert "--models top-k: no such model in the groups core" in str(stop.value)
    assert "Models there: average baseline best weighted." in str(stop.value)


def fake_study(tmp_path, configs, seeds=2):
    """Finished run folders where the study would put them: baseline 6 edits
    per utterance; best 5; baseline-small 8; best-small 6 (10 utterances x 20
    phones)."""
    edits = {"baseline": 6, "best": 5, "baseline-small": 8, "best-small": 6}
    for config in configs:
        for i in range(seeds):
            folder = tmp_path / "students" / config / f"seed{i}"
            make_run(folder, name=f"student-{config}", seed=2000 + i,
                     kd=not config.startswith("baseline"),
                     edits=[edits[config]] * 10)  # fmt: skip


def test_summary_compares_each_configuration_with_its_own_size(tmp_path):
    fake_study(tmp_path, ["baseline", "best", "baseline-small", "best-small"])
    args, jobs = plan(tmp_path, "--groups", "core", "size", "--seeds", "2",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    lines = []
    kd_study.summarize(args, jobs, lines.append)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {c["name"]: c for c in result["comparisons"]}
    # best: 25 % vs 30 %; best-small: 30 % vs 40 % (its own baseline, not 30 %)
    assert compared["best"]["baseline"] == "baseline"
    assert compared["best"]["result"]["difference"] == pytest.approx(-5.0)
    assert compared["best-small"]["baseline"] == "baseline-small"
    assert compared["best-small"]["result"]["difference"] == pytest.approx(-10.0)
    assert compared["best"]["pairs"] == [[2000, 2000], [2001, 2001]]
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "| best-small | 2000, 2001 |" in text
    assert "best-small vs baseline-small: -10.00 PER points" in text
    assert (tmp_path / "RESULTS.md").read_text() == text  # both places
    assert len(lines) == 1 and "| model | seeds |" in lines[0]
    # teachers, store, average and weighted not run: 8 of the 16 finished
    assert "8 of 16 runs finished" in text
    # The command that made them: the options that differ from the defaults.
    assert text.count("`python tools/kd_study.py --groups core size --seeds 2`") == 1


def test_progress_lines_name_both_pers_as_percentages():
    """run_demo.py's and kd_study.py's progress lines (issues 24, 34): the
    attention search and greedy CTC PERs, named, as plain percentages; the
    train log's note on a PER above 100 % is shown as it is."""
    from run_demo import short_log_line

    epoch = short_log_line(
        "epoch: 3, lr: 2.00e-03, time_s: 28.1 - train loss: 3.2 - valid loss: "
        "4.97, valid PER: 226.13, valid CTC_PER: 43.02"
    )
    # The names of the results tables (issue 34): PER is the attention
    # search's, CTC PER greedy CTC's; the figures as the log writes them.
    assert epoch == (
        "epoch 3: valid PER 226.13 % (attention search), valid CTC PER 43.02 % "
        "(greedy CTC) (28.1 s)"
    )
    test = short_log_line(
        "Epoch loaded: 3, time_s: 7.00e-01 - test loss: 4.87, test PER: 12.5, "
        "test CTC_PER: 9.47"
    )
    assert test == (
        "test PER 12.50 % (attention beam search), test CTC PER 9.47 % (greedy CTC)"
    )
    from mtkd.train_log import ABOVE_100_NOTE

    assert short_log_line(ABOVE_100_NOTE) == ABOVE_100_NOTE


def test_summary_of_the_paper_group_compares_with_the_control_and_tea0(tmp_path):
    """paper-best against paper-labels-only (same start, labels only) and
    against tea0 as trained (the paper's comparison, tea0's one run paired
    with each student seed)."""
    make_run(tmp_path / "teachers" / "tea0", name="tea0", seed=1000,
             edits=[4] * 10)  # fmt: skip
    for config, edits in (("paper-labels-only", 6), ("paper-best", 5)):
        for i in range(2):
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i, kd=True,
                     edits=[edits] * 10)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "paper", "--seeds", "2",
                      "--models", "paper-labels-only", "paper-best",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["comparisons"]}
    control = compared[("paper-best", "paper-labels-only")]
    assert control["result"]["difference"] == pytest.approx(-5.0)  # 25 vs 30 %
    versus_tea0 = compared[("paper-best", "tea0")]
    assert versus_tea0["result"]["difference"] == pytest.approx(5.0)  # 25 vs 20 %
    assert versus_tea0["pairs"] == [[1000, 2000], [1000, 2001]]
    assert ("paper-labels-only", "tea0") in compared
    assert (
        "paper-best vs tea0 (as trained): +5.00 PER points"
        in (tmp_path / "docs" / "RESULTS.md").read_text()
    )


def test_plan_of_the_unlabelled_group(tmp_path):
    """The pool's store part after the store; KD students on the pool get
    its manifest and unlabelled_alpha; self-training has no KD term; the
    oracle is a plain student on train + the pool with its true phones."""
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--models", "baseline",
                      "pseudo-1x", "weighted-2x", "oracle-1x")  # fmt: skip
    by_name = {job.name: job for job in jobs}
    # Over the whole (4x) pool; it replaces an older study's 2x part.
    part = by_name["store-t3-T1-unlabelled-4x"]
    assert part.after == ["store-t3-T1"]
    assert flag(part, "unlabelled") == str(tmp_path / "unlabelled" / "4x.json")
    assert flag(part, "store_folder") == by_name["store-t3-T1"].folder + "/store"
    assert flag(part, "overwrite") == "True"
    assert part.done_file == os.path.join(part.folder, "store_summary.json")
    weighted = by_name["weighted-2x/seed0"]
    assert flag(weighted, "unlabelled") == str(tmp_path / "unlabelled" / "2x.json")
    assert (flag(weighted, "alpha"), flag(weighted, "unlabelled_alpha")) == (
        "0.5",
        "1.0",
    )
    assert "store-t3-T1-unlabelled-4x" in weighted.after
    pseudo = by_name["pseudo-1x/seed2"]
    assert flag(pseudo, "unlabelled").endswith("unlabelled/1x.json")
    assert (flag(pseudo, "alpha"), flag(pseudo, "unlabelled_alpha")) == ("0.0", "0.0")
    oracle = by_name["oracle-1x/seed1"]
    assert oracle.argv[0] == "train_teacher.py" and flag(oracle, "skip_prep") == "True"
    assert flag(oracle, "train_annotation").endswith("unlabelled/oracle-1x.json")
    assert kd_study.baseline_of("weighted-1x-small") == "baseline-small"
    assert not (tmp_path / "unlabelled").exists()  # --plan makes nothing


def test_summary_of_the_unlabelled_group_compares_with_self_training(tmp_path):
    """weighted-1x against the baseline and against pseudo-1x; the share of
    the baseline-oracle gap each closes (baseline 30 %, oracle 20 %)."""
    for config, edits in (("baseline", 6), ("pseudo-1x", 5), ("weighted-1x", 4.5),
                          ("oracle-1x", 4)):  # fmt: skip
        for i in range(2):
            per_utt = [int(edits)] * 5 + [int(edits + 0.5)] * 5
            kd = config in ("pseudo-1x", "weighted-1x")
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i, kd=kd,
                     edits=per_utt)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--seeds", "2", "--models",
                      "baseline", "pseudo-1x", "weighted-1x", "oracle-1x",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["comparisons"]}
    assert compared[("weighted-1x", "baseline")]["result"][
        "difference"
    ] == pytest.approx(-7.5)
    assert compared[("weighted-1x", "pseudo-1x")]["result"][
        "difference"
    ] == pytest.approx(-2.5)
    assert compared[("oracle-1x", "baseline")]["result"]["difference"] == pytest.approx(
        -10.0
    )
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "oracle-1x (train + pool with its true phones) closed" in text
    assert "pseudo-1x 50 %" in text and "weighted-1x 75 %" in text


def test_the_half_student_is_at_most_half_the_teachers_mean(tmp_path):
    """-half: width 62 (142 k parameters; the study's teachers average 288 k),
    with its own baseline, a plain student of the same width."""
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--models",
                      "baseline-half", "weighted-2x-half")  # fmt: skip
    by_name = {job.name: job for job in jobs}
    half = by_name["weighted-2x-half/seed0"]
    assert flag(half, "unlabelled").endswith("unlabelled/2x.json")
    baseline = by_name["baseline-half/seed1"]
    assert baseline.argv[0] == "train_teacher.py"
    widths = ("rnn_neurons", "dnn_neurons", "dec_neurons")
    for job in (half, baseline):
        assert [flag(job, k) for k in widths] == ["62", "62", "62"]
    assert kd_study.baseline_of("weighted-2x-half") == "baseline-half"
    assert kd_study.student_width("weighted-1x") == 64


def test_pool_students_are_compared_with_the_best_teacher_on_valid(tmp_path):
    """The best teacher is chosen by valid PER (tea3 here, 20 % valid against
    tea0's 30 %), even though tea0 is better on test; every KD student on the
    pool, of any size, is paired with its one run."""
    better_valid = TRAIN_LOG.replace("valid CTC_PER: 30.00", "valid CTC_PER: 20.00")
    make_run(tmp_path / "teachers" / "tea0", name="tea0", seed=1000, edits=[3] * 10)
    make_run(tmp_path / "teachers" / "tea3", name="tea3", seed=1003,
             edits=[4] * 10, log=better_valid)  # fmt: skip
    for config in ("weighted-1x", "weighted-1x-half", "pseudo-1x"):
        for i in range(2):
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i, kd=True,
                     edits=[5] * 10)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--seeds", "2", "--models",
                      "weighted-1x", "weighted-1x-half", "pseudo-1x",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    against = {c["name"]: c for c in result["comparisons"] if c["baseline"] == "tea3"}
    assert sorted(against) == ["weighted-1x", "weighted-1x-half"]  # not pseudo
    assert against["weighted-1x-half"]["pairs"] == [[1003, 2000], [1003, 2001]]
    assert against["weighted-1x-half"]["result"]["difference"] == pytest.approx(5.0)
    assert not [c for c in result["comparisons"] if c["baseline"] == "tea0"]
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "weighted-1x-half vs tea3 (the best teacher on valid): +5.00 PER" in text


def test_confirm_compares_a_pool_student_with_the_best_teacher(tmp_path):
    """--confirm weighted-2x-half --seeds 5: against the best teacher on
    valid on the fresh seeds 2003-2004 alone, then on all five (its baseline
    has no fresh seeds: that comparison is left out, not made on fewer)."""
    make_run(tmp_path / "teachers" / "tea0", name="tea0", seed=1000, edits=[5] * 10)
    for i in range(5):
        make_run(tmp_path / "students" / "weighted-2x-half" / f"seed{i}",
                 name="student-weighted-2x-half", seed=2000 + i, kd=True,
                 edits=[4 if i >= 3 else 6] * 10)  # fmt: skip
    for i in range(3):
        make_run(tmp_path / "students" / "baseline-half" / f"seed{i}",
                 name="student-baseline-half", seed=2000 + i,
                 edits=[7] * 10)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--seeds", "5",
                      "--models", "weighted-2x-half", "baseline-half",
                      "--confirm", "weighted-2x-half",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    got = {(c["baseline"], c["seeds"]): c for c in result["confirmations"]}
    fresh = got[("tea0", "fresh seeds")]
    assert fresh["pairs"] == [[1000, 2003], [1000, 2004]]
    assert fresh["result"]["difference"] == pytest.approx(-5.0)  # 20 vs 25 %
    assert got[("tea0", "every seed")]["result"]["difference"] == pytest.approx(1.0)
    assert ("baseline-half", "fresh seeds") not in got
    assert got[("baseline-half", "every seed")]["pairs"] == [[2000, 2000],
                                                            [2001, 2001],
                                                            [2002, 2002]]  # fmt: skip
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert (
        "fresh seeds: weighted-2x-half vs tea0 (the best teacher on valid): -5.00"
        in text
    )


def test_confirm_compares_the_chosen_configuration_on_fresh_seeds(tmp_path):
    """--confirm weighted-1x --seeds 5: against the baseline and self-training
    on seeds 2003-2004 alone, then on all five; in RESULTS.md and results.json."""
    for config, edits in (("baseline", 6), ("pseudo-1x", 5), ("weighted-1x", 4)):
        for i in range(5):
            fresh_gain = 1 if (config == "weighted-1x" and i >= 3) else 0
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i, kd=config != "baseline",
                     edits=[edits + fresh_gain] * 10)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--seeds", "5",
                      "--models", "baseline", "pseudo-1x", "weighted-1x",
                      "--confirm", "weighted-1x",
                      "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    got = {(c["baseline"], c["seeds"]): c for c in result["confirmations"]}
    assert got[("baseline", "fresh seeds")]["pairs"] == [[2003, 2003], [2004, 2004]]
    assert got[("baseline", "fresh seeds")]["result"]["difference"] == pytest.approx(
        -5.0
    )
    assert got[("baseline", "every seed")]["result"]["difference"] == pytest.approx(
        -8.0
    )
    assert got[("pseudo-1x", "fresh seeds")]["result"]["difference"] == pytest.approx(
        0.0
    )
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    assert "Confirmation of weighted-1x, chosen on valid" in text
    assert "fresh seeds: weighted-1x vs baseline: -5.00 PER points" in text
    assert "--confirm weighted-1x" in text


def test_valid_decode_uses_a_runs_own_valid_manifest(tmp_path):
    """A run on manifests made elsewhere (the oracle: --valid_annotation and
    --test_annotation given) is scored on its own valid manifest; others on
    the valid.json in their folder."""
    import valid_decode

    run = tmp_path / "oracle-1x" / "seed0"
    make_run(run, name="student-oracle-1x", seed=2000)
    (run / "demo_command.txt").write_text(
        "python train_teacher.py hparams/teacher.yaml --output_folder X "
        "--skip_prep True --valid_annotation /m/valid.json --test_annotation "
        "/m/test.json\n"
    )
    argv = valid_decode.valid_command(str(run), "/copy")
    assert argv[argv.index("--test_annotation") + 1] == "/m/valid.json"
    assert argv.count("--test_annotation") == 1 and argv.count("--skip_prep") == 1
    assert argv[argv.index("--output_folder") + 1] == "/copy"
    (run / "demo_command.txt").write_text(
        "python train_teacher.py hparams/teacher.yaml --output_folder X\n"
    )
    argv = valid_decode.valid_command(str(run), "/copy")
    assert argv[argv.index("--test_annotation") + 1] == "/copy/valid.json"
    assert argv[-2:] == ["--skip_prep", "true"]
    # --annotation: another manifest (the Flite twin's test) instead of valid.
    argv = valid_decode.valid_command(str(run), "/copy", "/f/test.json")
    assert argv[argv.index("--test_annotation") + 1] == "/f/test.json"
    assert argv.count("--test_annotation") == 1
    with pytest.raises(valid_decode.ValidDecodeError, match="--annotation"):
        valid_decode.main(["--out", str(tmp_path / "v"), "--annotation",
                           str(tmp_path / "none.json"), str(run)])  # fmt: skip
    # --annotation_root: a copy of the manifest with {data_root} resolved.
    manifest = tmp_path / "test.json"
    manifest.write_text(json.dumps({"U1": {"wav": "{data_root}/TEST/U1.WAV"}}))
    (tmp_path / "flite").mkdir()
    copy = valid_decode.resolved_annotation(
        str(manifest), str(tmp_path / "flite"), str(tmp_path / "out")
    )
    assert copy == str(tmp_path / "out" / "test.json")
    resolved = json.loads(open(copy).read())["U1"]["wav"]
    assert resolved == f"{tmp_path}/flite/TEST/U1.WAV"
    with pytest.raises(valid_decode.ValidDecodeError, match="no such folder"):
        valid_decode.resolved_annotation(str(manifest), "/no/such", str(tmp_path))


def test_valid_decode_compares_the_pairs_asked_for():
    """--pair limits the comparisons to the pairs given (two model sizes are
    not compared unless asked); --baseline adds every configuration against
    it, a pair listed either way round once; an unknown name is an error
    naming the option."""
    import valid_decode

    scores = dict.fromkeys(["base", "kd", "base-half", "kd-half"])
    pairs = [("kd", "base"), ("kd-half", "base-half")]
    assert valid_decode.comparisons(scores, pairs=pairs) == pairs
    assert valid_decode.comparisons(scores, ["base"], pairs) == [
        ("kd", "base"), ("kd-half", "base-half"),
        ("base-half", "base"), ("kd-half", "base"),
    ]  # fmt: skip
    assert valid_decode.comparisons(scores, ["base", "kd"]) == [
        ("kd", "base"), ("base-half", "base"), ("kd-half", "base"),
        ("base-half", "kd"), ("kd-half", "kd"),
    ]  # fmt: skip
    with pytest.raises(valid_decode.ValidDecodeError, match="--pair kd teacher"):
        valid_decode.comparisons(scores, pairs=[("kd", "teacher")])


def test_plan_of_the_matched_controls(tmp_path):
    """baseline-matched: the labelled-only student for as many updates as a
    1x pool student (twice the epochs over half the utterances); the half
    control three times (2x pool); pseudo-matched: weighted-1x's command
    with the pool rows on the consensus alone (unlabelled_alpha 0), nothing
    else changed."""
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--student_epochs", "30",
                      "--models", "baseline-matched", "baseline-half-matched",
                      "pseudo-matched", "weighted-1x")  # fmt: skip
    by_name = {job.name: job for job in jobs}
    matched = by_name["baseline-matched/seed1"]
    assert matched.argv[0] == "train_teacher.py"
    assert (flag(matched, "number_of_epochs"), flag(matched, "seed")) == ("60", "2001")
    assert flag(matched, "rnn_neurons") == "64"
    half = by_name["baseline-half-matched/seed0"]
    assert (flag(half, "number_of_epochs"), flag(half, "rnn_neurons")) == ("90", "62")
    pseudo, weighted = by_name["pseudo-matched/seed0"], by_name["weighted-1x/seed0"]
    differ = [(a, b) for a, b in zip(pseudo.argv, weighted.argv, strict=True) if a != b]
    assert differ == [
        (pseudo.folder, weighted.folder),
        ("0.0", "1.0"),
    ]  # the output folder, and unlabelled_alpha
    assert flag(pseudo, "unlabelled_alpha") == "0.0" and flag(pseudo, "alpha") == "0.5"
    assert kd_study.matched_baseline_of("weighted-1x") == "baseline-matched"
    assert kd_study.matched_baseline_of("pseudo-matched") == "baseline-matched"
    assert kd_study.matched_baseline_of("weighted-2x-half") == "baseline-half-matched"
    # The iterate group's controls at 2x and 4x (issue 32).
    assert kd_study.matched_baseline_of("weighted-2x") == "baseline-matched-2x"
    assert kd_study.matched_baseline_of("gen2-4x") == "baseline-matched-4x"
    assert kd_study.matched_baseline_of("weighted-loo-filter-1x") == "baseline-matched"
    assert kd_study.matched_baseline_of("weighted") is None  # not on the pool


def test_summary_compares_with_the_matched_controls_and_can_be_recomputed(tmp_path):
    """weighted-1x against baseline, baseline-matched, pseudo-1x and
    pseudo-matched; every comparison line is recomputed from the committed
    utterances.json alone, and its seed-level tests are in the line."""
    from mtkd_tools.significance import describe, paired_bootstrap, read_utterances

    per_seed = {"baseline": 7, "baseline-matched": 6, "pseudo-matched": 5,
                "weighted-1x": 4, "pseudo-1x": 5}  # fmt: skip
    for config, edits in per_seed.items():
        for i in range(3):
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i,
                     kd=config in ("pseudo-matched", "weighted-1x", "pseudo-1x"),
                     edits=[edits + (i == 1)] * 5 + [edits] * 5)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "unlabelled", "--seeds", "3",
                      "--models", *per_seed, "--docs_folder",
                      str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["comparisons"]}
    assert sorted(b for n, b in compared if n == "weighted-1x") == [
        "baseline", "baseline-matched", "pseudo-1x", "pseudo-matched"
    ]  # fmt: skip
    assert ("baseline-matched", "baseline") in compared
    assert ("pseudo-matched", "baseline-matched") in compared
    line = compared[("weighted-1x", "baseline-matched")]
    assert line["result"]["difference"] == pytest.approx(-10.0)
    assert line["student_runs"] == ["weighted-1x@2000", "weighted-1x@2001",
                                    "weighted-1x@2002"]  # fmt: skip
    assert "seed-level t-test" in line["sentence"]
    assert line["sentence"].endswith("lower PER than baseline-matched.")
    counts = read_utterances(tmp_path / "docs" / "utterances.json")
    assert len(counts) == 15
    for record in result["comparisons"]:
        again = paired_bootstrap(
            [counts[k] for k in record["baseline_runs"]],
            [counts[k] for k in record["student_runs"]],
        )
        assert (
            describe(record["name"], record["baseline"], again) == (record["sentence"])
        )


def test_a_later_session_continues_from_the_committed_results(tmp_path):
    """Seeds 2000-2001 ran in an earlier session and were committed; here the
    teacher is trained again and scores every test utterance the same, so
    those runs are taken from the committed files, seed 2002 is run, and the
    summary compares all three seeds. A teacher that scores differently
    stops the continuation with the reason."""
    earlier, here = tmp_path / "earlier", tmp_path / "here"
    for study, seeds in ((earlier, (0, 1)), (here, (2,))):
        make_run(study / "teachers" / "tea0", name="tea0", seed=1000, edits=[3] * 10)
        for config, edits in (("baseline-matched", 6), ("weighted-1x", 4)):
            for i in seeds:
                make_run(study / "students" / config / f"seed{i}",
                         name=f"student-{config}", seed=2000 + i,
                         kd=config == "weighted-1x",
                         edits=[edits + i % 2] * 10)  # fmt: skip
    committed_folder = tmp_path / "committed"
    args, jobs = plan(earlier, "--groups", "unlabelled", "--seeds", "2", "--models",
                      "baseline-matched", "weighted-1x", "--docs_folder",
                      str(committed_folder))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    args, jobs = plan(here, "--groups", "unlabelled", "--seeds", "3", "--models",
                      "baseline-matched", "weighted-1x", "--docs_folder",
                      str(tmp_path / "docs"), "--continue_from",
                      str(committed_folder))  # fmt: skip
    committed = kd_study.Committed.read(str(committed_folder))
    assert sorted(committed.runs) == [
        "baseline-matched@2000", "baseline-matched@2001", "tea0@1000",
        "weighted-1x@2000", "weighted-1x@2001",
    ]  # fmt: skip
    teachers = [job for job in jobs if kd_study.is_teacher_job(job)]
    committed.check_teachers([j for j in teachers if j.name == "tea0"])
    to_run = [job.name for job in jobs if kd_study.job_key(job) not in committed.runs]
    assert "weighted-1x/seed2" in to_run and "weighted-1x/seed1" not in to_run
    kd_study.summarize(args, jobs, lambda text: None, committed)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["comparisons"]}
    line = compared[("weighted-1x", "baseline-matched")]
    assert line["pairs"] == [[2000, 2000], [2001, 2001], [2002, 2002]]
    assert line["result"]["difference"] == pytest.approx(-10.0)
    # Another machine's teacher: one utterance scored differently.
    make_run(tmp_path / "other" / "teachers" / "tea0", name="tea0", seed=1000,
             edits=[3] * 9 + [4])  # fmt: skip
    _, other_jobs = plan(tmp_path / "other", "--groups", "unlabelled",
                         "--models", "weighted-1x")  # fmt: skip
    other = [j for j in other_jobs if j.name == "tea0"]
    with pytest.raises(kd_study.run_demo.RecipeError, match="does not score the test"):
        committed.check_teachers(other)


def test_plan_of_the_iterate_group(tmp_path):
    """Issue 32: leave-one-out scores and the disagreement filter at every
    pool size with their controls; generations with noise, each from the
    teachers and the previous generation's student of the same seed (a store
    per seed); the teachers again at the student seeds."""
    args, jobs = plan(tmp_path, "--groups", "iterate", "--seeds", "2",
                      "--student_epochs", "30", "--models", "gen3-4x",
                      "gen2-alone-4x", "weighted-loo-filter-2x",
                      "pseudo-filter-2x", "baseline-matched-4x",
                      "weighted-loo-filter-4x-half", "teacher-tea0")  # fmt: skip
    by_name = {job.name: job for job in jobs}
    # gen3 needs gen2, which needs gen1: all are planned.
    assert {"gen1-4x/seed1", "gen2-4x/seed1", "gen3-4x/seed1"} <= set(by_name)
    unlabelled = str(tmp_path / "unlabelled")
    gen1, gen2 = by_name["gen1-4x/seed1"], by_name["gen2-4x/seed1"]
    assert flag(gen1, "tea_infer_dir").endswith("stores/store-t3-T1/store")
    assert "store-t3-T1-unlabelled-4x" in gen1.after
    store = by_name["store-t3+gen1-4x-T1-seed1"]
    assert store.after == ["tea0", "tea3", "tea5", "gen1-4x/seed1"]
    assert flag(store, "unlabelled") == os.path.join(unlabelled, "4x.json")
    assert flag(gen2, "tea_infer_dir") == os.path.join(store.folder, "store")
    assert gen2.after == ["store-t3+gen1-4x-T1-seed1"]
    assert by_name["gen3-4x/seed0"].after == ["store-t3+gen2-4x-T1-seed0"]
    for job in (gen1, gen2, by_name["gen3-4x/seed0"]):
        assert flag(job, "augment") == "true"  # the noise of Noisy Student
        assert flag(job, "unlabelled_scores") == "leave_one_out"
        assert flag(job, "unlabelled_match_updates") == "true"
        assert flag(job, "unlabelled_max_disagreement") == str(
            kd_study.MAX_DISAGREEMENT
        )
        assert flag(job, "unlabelled") == os.path.join(unlabelled, "4x.json")
    alone = by_name["gen2-alone-4x/seed0"]
    assert by_name["store-gen1-4x-T1-seed0"].after == ["gen1-4x/seed0"]
    assert "--unlabelled_scores" not in alone.argv  # one teacher: no consensus
    assert "--unlabelled_max_disagreement" not in alone.argv
    # The matched self-training differs from the filtered student in the
    # pool rows' objective alone.
    kd, pseudo = (
        by_name["weighted-loo-filter-2x/seed0"],
        by_name["pseudo-filter-2x/seed0"],
    )
    differ = [(a, b) for a, b in zip(pseudo.argv, kd.argv, strict=True) if a != b]
    assert differ == [(pseudo.folder, kd.folder), ("0.0", "1.0")]
    assert flag(kd, "unlabelled") == os.path.join(unlabelled, "2x.json")
    matched = by_name["baseline-matched-4x/seed0"]
    assert matched.argv[0] == "train_teacher.py"
    assert flag(matched, "number_of_epochs") == "150"  # 30 x (1 + 4)
    half = by_name["weighted-loo-filter-4x-half/seed0"]
    assert flag(half, "rnn_neurons") == "62"
    teacher = by_name["teacher-tea0/seed1"]
    assert teacher.argv[:2] == ["train_teacher.py", "hparams/teachers/tea0.yaml"]
    assert (flag(teacher, "seed"), flag(teacher, "rnn_neurons")) == ("2001", "96")
    assert kd_study.matched_epochs(30, "4x") == 150
    # The threshold's candidates: the 1x filtered student at each, differing
    # from the unfiltered leave-one-out student in that option alone.
    _, sweep = plan(tmp_path, "--groups", "iterate", "--models",
                    "weighted-loo-1x", "weighted-loo-filter-1x-max5",
                    "weighted-loo-filter-1x-max7.5")  # fmt: skip
    by_name = {job.name: job for job in sweep}
    loo = by_name["weighted-loo-1x/seed0"]
    for limit in ("5", "7.5"):
        job = by_name[f"weighted-loo-filter-1x-max{limit}/seed0"]
        assert flag(job, "unlabelled_max_disagreement") == str(float(limit))
        extra = [a for a in job.argv if a not in loo.argv]
        assert extra == [
            job.folder, "--unlabelled_max_disagreement", str(float(limit)),
            "--unlabelled_match_updates", "true",
        ]  # fmt: skip
    assert ("weighted-loo-filter-1x-max7.5", "weighted-loo-1x") in (
        kd_study.iterate_pairs()
    )
    assert kd_study.generation_of("t3+gen2-4x") == "gen2-4x"
    assert kd_study.generation_of("t3") is None
    # A generation's store with its student not trained: an error naming it.
    student = str(tmp_path / "students" / "gen1-4x" / "seed0")
    with pytest.raises(kd_study.run_demo.RecipeError) as err:
        kd_study.write_teacher_list(str(tmp_path / "t.txt"), [student], "test")
    assert str(err.value).startswith(f"{student}: no finished teacher there")
    assert "train_kd.py" in str(err.value)


def test_summary_of_the_iterate_group_pairs_each_change_with_its_control(tmp_path):
    """Issue 32: every configuration of the iterate group is compared with
    the one it differs from in one thing (scores, filter, self-training on
    the same audio, the generation before, noise, the teachers at the
    student's seeds) and with its matched labelled-only control."""
    edits = {"baseline-matched-4x": 8, "weighted-4x": 7, "weighted-loo-4x": 6,
             "weighted-loo-filter-4x": 5, "pseudo-filter-4x": 7, "gen1-4x": 4,
             "gen2-4x": 3, "gen2-alone-4x": 5, "weighted-loo-filter-4x-half": 6,
             "teacher-tea0": 5}  # fmt: skip
    for config, count in edits.items():
        for i in range(3):
            make_run(tmp_path / "students" / config / f"seed{i}",
                     name=f"student-{config}", seed=2000 + i,
                     kd=not config.startswith(("baseline", "teacher")),
                     edits=[count + (i == 1)] * 5 + [count] * 5)  # fmt: skip
    args, jobs = plan(tmp_path, "--groups", "iterate", "--seeds", "3", "--models",
                      *edits, "--docs_folder", str(tmp_path / "docs"))  # fmt: skip
    kd_study.summarize(args, jobs, lambda text: None)
    result = json.loads((tmp_path / "docs" / "results.json").read_text())
    compared = {(c["name"], c["baseline"]): c for c in result["comparisons"]}
    assert len(compared) == len(result["comparisons"])  # each pair once
    expected = {  # PER points: 10 utterances of 20 phones, edits as above
        ("weighted-loo-4x", "weighted-4x"): -5.0,
        ("weighted-loo-filter-4x", "weighted-loo-4x"): -5.0,
        ("weighted-loo-filter-4x", "pseudo-filter-4x"): -10.0,
        ("weighted-loo-filter-4x", "baseline-matched-4x"): -15.0,
        ("gen1-4x", "weighted-loo-filter-4x"): -5.0,
        ("gen2-4x", "gen1-4x"): -5.0,
        ("gen2-4x", "gen2-alone-4x"): -10.0,
        ("gen2-4x", "baseline-matched-4x"): -25.0,
        ("weighted-loo-filter-4x-half", "teacher-tea0"): +5.0,
    }
    for pair, difference in expected.items():
        line = compared[pair]
        assert line["result"]["difference"] == pytest.approx(difference), pair
        assert line["pairs"] == [[2000, 2000], [2001, 2001], [2002, 2002]]
    # Configurations without runs (gen3, teacher-tea3) are left out.
    assert not [p for p in compared if "gen3-4x" in p or "teacher-tea3" in p]


def test_the_demo_takes_a_larger_pool(tmp_path):
    """run_demo.py --unlabelled --pool_multiple 4: the baseline trains five
    times the epochs (as many updates as a student on train + 4x the audio),
    its own default folder, and a demo folder with another pool is refused."""
    import run_demo

    args = run_demo.parse_args(["--quick", "--unlabelled", "--pool_multiple", "4"])
    assert args.output_folder == "results/demo_unlabelled_4x_quick"
    args.output_folder = str(tmp_path / "d")
    jobs = run_demo.build_jobs(args, str(tmp_path / "TIMIT"))
    baseline = next(job for job in jobs if job.name.startswith("student-baseline"))
    assert flag(baseline, "number_of_epochs") == str(5 * args.student_epochs)
    with pytest.raises(SystemExit):
        run_demo.parse_args(["--pool_multiple", "4"])  # no pool without it
    pool = tmp_path / "TIMIT" / "POOL"
    pool.mkdir(parents=True)
    (pool / "MINI_POOL.json").write_text(json.dumps({"options": {"pool_speakers": 6}}))
    run_demo.check_pool_size(str(tmp_path / "TIMIT"), 6, str(tmp_path))
    with pytest.raises(run_demo.DemoError, match="holds a pool of 6 speakers"):
        run_demo.check_pool_size(str(tmp_path / "TIMIT"), 24, str(tmp_path))


def test_the_study_runs_on_the_mixed_corpus_and_keeps_a_corpus_to_its_preset(
    tmp_path,
):
    """Issue 36: --corpus_preset demo_core_mixed makes the study's corpus (and
    pool) with both synthesisers; a folder whose corpus was made with another
    preset is refused, naming both, rather than mixed into the results."""
    args, _ = plan(tmp_path, "--corpus_preset", "demo_core_mixed")
    assert "--corpus_preset demo_core_mixed" in kd_study.study_command(args)
    assert "--corpus_preset" not in kd_study.study_command(plan(tmp_path)[0])
    corpus = tmp_path / "TIMIT"
    corpus.mkdir()
    (corpus / "MINI_TIMIT.json").write_text(
        json.dumps({"options": {"preset": "demo_core", "seed": 1234}})
    )
    with pytest.raises(kd_study.run_demo.RecipeError) as err:
        kd_study.make_corpus(args, print)
    assert str(err.value) == (
        f"{corpus} is a mini corpus of the preset demo_core, not demo_core_mixed: "
        "give another --output_folder for a demo_core_mixed study, or "
        "--corpus_preset demo_core to go on with this one."
    )
    assert kd_study.make_corpus(plan(tmp_path)[0], print) == str(corpus)
    with pytest.raises(SystemExit):
        kd_study.parse_args(["--corpus_preset", "tiny"])


def test_the_threshold_is_chosen_on_valid_from_complete_candidates(monkeypatch):
    """Issue 32: MAX_DISAGREEMENT is the candidate with the lowest mean valid
    PER (test PER plays no part); the unfiltered student competes too; with
    a candidate missing or at other seeds, nothing is chosen."""
    monkeypatch.setattr(kd_study, "MAX_DISAGREEMENT_CANDIDATES", (5.0, 7.5, 10.0))
    monkeypatch.setattr(kd_study, "MAX_DISAGREEMENT", 10.0)

    def group(valid, test=1.0, seeds=(2000, 2001, 2002)):
        return {"seeds": list(seeds), "valid_PER": {"mean": valid},
                "test_PER": {"mean": test}}  # fmt: skip

    # 10 % has the lowest test PER; valid alone decides.
    by_name = {
        "weighted-loo-1x": group(6.10),
        "weighted-loo-filter-1x-max5": group(6.30),
        "weighted-loo-filter-1x-max7.5": group(5.90),
        "weighted-loo-filter-1x-max10": group(6.00, test=0.5),
    }
    sentence = kd_study.threshold_choice(by_name)
    assert sentence == (
        "The disagreement threshold, chosen on valid (mean valid PER over 3 "
        "seed(s), 2000-2002: no filter 6.10 %, 5 % 6.30 %, 7.5 % 5.90 %, "
        "10 % 6.00 %): 7.5 % (weighted-loo-filter-1x-max7.5); "
        "MAX_DISAGREEMENT in tools/kd_study.py: set it (now 10)."
    )
    by_name["weighted-loo-filter-1x-max10"] = group(5.80)
    assert kd_study.threshold_choice(by_name).endswith(
        "10 % (weighted-loo-filter-1x-max10); "
        "MAX_DISAGREEMENT in tools/kd_study.py: as set."
    )
    by_name["weighted-loo-1x"] = group(5.70)
    assert "the filter is not chosen" in kd_study.threshold_choice(by_name)
    by_name["weighted-loo-filter-1x-max5"] = group(6.30, seeds=(2000, 2001))
    assert kd_study.threshold_choice(by_name) is None
    del by_name["weighted-loo-filter-1x-max5"]
    assert kd_study.threshold_choice(by_name) is None
