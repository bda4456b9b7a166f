"""bench/gpu_check.py (issue 35) in its CPU mode, ``--device cpu --tiny``: the
same checks as on a GPU with tiny models and few steps, so that the script
cannot rot before a GPU runs it; its budgets, errors and projections."""

import json
import math
import os
import re
import sys
import time

import pytest
import torch
from conftest import REPO, run_script

BENCH = os.path.join(REPO, "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import gpu_check  # noqa: E402
import gpu_planning  # noqa: E402
import gpu_precision  # noqa: E402
from gpu_budget import Command, Deadline  # noqa: E402

from mtkd import RecipeError  # noqa: E402
from mtkd_tools.export import EXPORT_FILES  # noqa: E402

# The one check the test leaves out, through its budget: the skip path.
BUDGET_SKIPPED = "stages.demo_unlabelled"
STORE_CHECK = "mixed_precision.store"
# The tiny mini corpus: 48/16/16 utterances, 12 SA1/SA2 sentences of its 6
# training speakers (the unlabelled audio), 40 files in TEST.
UTTERANCES = {"train": 48, "valid": 16, "test": 16, "unlabelled": 12}
TEST_FOLDER_FILES = 40
CUDA_TESTS = 6  # tests/test_cuda.py, fp32/bf16/fp16 teachers counted apart


def finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def tiny_check(mini_corpus, tmp_path_factory):
    """One tiny check run, as a user runs it, on the session's mini corpus
    (making one costs more than the rest); (folder, stdout, JSON)."""
    out = tmp_path_factory.mktemp("gpu_check") / "check"
    proc = run_script(
        [
            "bench/gpu_check.py", "--device", "cpu", "--tiny",
            "--output_folder", str(out), "--budget", f"{BUDGET_SKIPPED}=0",
            "--data_folder", mini_corpus,
        ],
        timeout=3600,
        check=False,
    )  # fmt: skip
    with open(out / gpu_check.JSON_FILE, encoding="utf-8") as f:
        data = json.load(f)
    # Exit status 1 when a check failed (the bf16 store's verdict, below).
    assert proc.returncode == (1 if data["counts"]["failed"] else 0), proc.stderr
    return out, proc.stdout, data


def figures(data, name):
    part, check = name.split(".")
    return data["parts"][part][check]["figures"]


@pytest.mark.slow  # the whole tiny check (minutes): .ci/run's slow step
def test_every_check_ran_but_the_one_whose_budget_is_spent(tiny_check):
    out, stdout, data = tiny_check
    assert (data["device"], data["mode"]) == ("cpu", "tiny")
    recorded = {
        f"{part}.{check}": record
        for part, checks in data["parts"].items()
        for check, record in checks.items()
    }
    assert sorted(recorded) == sorted(gpu_check.CHECKS)
    statuses = {name: r["status"] for name, r in recorded.items()}
    # The bf16 store's verdict is the figures' (test_mixed_precision_figures).
    store = statuses.pop(STORE_CHECK)
    assert store in ("passed", "failed")
    assert statuses == {
        name: "skipped" if name == BUDGET_SKIPPED else "passed"
        for name in gpu_check.CHECKS
        if name != STORE_CHECK
    }
    (skip,) = data["skipped"]
    assert skip["check"] == BUDGET_SKIPPED
    assert skip["note"].startswith("time budget spent before it started")
    assert f"{BUDGET_SKIPPED} 0 s" in skip["note"]
    failed = int(store == "failed")
    assert data["counts"] == {
        "passed": len(gpu_check.CHECKS) - 1 - failed,
        "failed": failed,
        "skipped": 1,
    }
    assert data["budgets_s"][BUDGET_SKIPPED] == 0
    for record in recorded.values():
        assert finite(record["seconds"]) and record["seconds"] >= 0
    assert finite(data["seconds"]) and data["cpu_s"]["commands"] > 0
    assert {"_s", "_h", "_mib", "_audio_s_per_s", "ratio", "tv"} <= set(data["units"])
    # RESULTS.md (also printed): one row per check; a log per command run.
    results = (out / gpu_check.MARKDOWN_FILE).read_text()
    for name, record in recorded.items():
        assert f"| {name} | {record['status']} |" in results
    assert results in stdout
    logs = set(os.listdir(out / "logs"))
    assert {"demo_quick.log", "export.log", "transcribe.log", "cuda_tests.log",
            "teacher_bf16.log", "store_fp32.log", "store_bf16.log",
            "student_bf16.log", "paper_teacher.log"} <= logs  # fmt: skip
    assert not any(name.startswith("demo_unlabelled") for name in logs)


@pytest.mark.slow  # the whole tiny check (minutes): .ci/run's slow step
def test_fp16_is_skipped_on_the_cpu_with_a_note(tiny_check):
    _, _, data = tiny_check
    preflight = figures(data, "preflight.device")["precisions"]
    assert preflight["fp32"] == preflight["bf16"] == "passes"
    assert preflight["fp16"].startswith("refused: --precision/--eval_precision fp16")
    for name in ("mixed_precision.teachers", "mixed_precision.students"):
        part, check = name.split(".")
        record = data["parts"][part][check]
        assert record["figures"]["precisions"]["fp16"] == gpu_precision.FP16_ON_CPU
        assert "fp16 skipped: fp16 needs a CUDA GPU" in record["note"]
    step = data["parts"]["planning"]["step_time"]
    assert step["figures"]["precisions"]["fp16"]["skipped"].startswith("fp16 needs")
    assert "fp16 skipped: no CUDA GPU" in step["note"]
    assert "peak GPU memory not measured" in step["note"]


@pytest.mark.slow  # the whole tiny check (minutes): .ci/run's slow step
def test_stages_ran_on_the_device_and_recorded_their_figures(tiny_check):
    _, _, data = tiny_check
    corpus = figures(data, "inputs.corpus")
    assert corpus["made"] is False and corpus["unlabelled"] == "timit_sa"
    assert corpus["train_batches"] == 6
    demo = figures(data, "stages.demo_quick")
    assert "--device cpu" in demo["command"] and "--quick" in demo["command"]
    assert f"--data_folder {corpus['data_folder']}" in demo["command"]
    assert sorted(demo["models"]) == ["student-baseline", "student-best", "tea0"]
    for model in demo["models"].values():
        assert finite(model["test_PER_percent"]) and model["parameters"] > 0
        assert finite(model["wall_time_s"])
    assert sorted(figures(data, "stages.export")["files"]) == sorted(EXPORT_FILES)
    transcribed = figures(data, "stages.transcribe")
    assert transcribed["files"] == TEST_FOLDER_FILES
    assert finite(transcribed["real_time_factor"]) and transcribed["audio_s"] > 60
    tests = figures(data, "tests.cuda")
    assert tests["files"] == ["tests/test_cuda.py"]
    assert (tests["tests"], tests["passed"], tests["failed"]) == (CUDA_TESTS, 0, [])
    assert len(tests["skipped"]) == CUDA_TESTS
    assert {s["reason"] for s in tests["skipped"]} == {
        "needs a CUDA GPU (bench/gpu_check.py runs these tests on one)"
    }


@pytest.mark.slow  # the whole tiny check (minutes): .ci/run's slow step
def test_mixed_precision_figures(tiny_check):
    _, _, data = tiny_check
    for name in ("mixed_precision.teachers", "mixed_precision.students"):
        bf16 = figures(data, name)["precisions"]["bf16"]
        epochs = gpu_precision.TEACHER_EPOCHS["tiny"]
        assert bf16["epochs"] == epochs and len(bf16["epoch_train_loss"]) == epochs
        assert all(finite(x) for x in bf16["epoch_train_loss"])
        assert bf16["finite"] and bf16["loss_falls"] and bf16["passed"]
        assert bf16["last_over_first"] <= gpu_precision.LOSS_FALL
        assert bf16["nonfinite_batch_warnings"] == 0
        assert bf16["optimiser_steps_per_epoch"] == 6
    part, check = STORE_CHECK.split(".")
    record = data["parts"][part][check]
    store = record["figures"]
    assert (store["reference"], store["compared"], store["teachers"]) == (
        "fp32",
        "bf16",
        1,
    )
    assert {s: v["utterances"] for s, v in store["splits"].items()} == UTTERANCES
    assert store["all"]["hypothesis_pairs"] == sum(UTTERANCES.values())
    overall = store["all"]
    for key in ("tv_mean", "tv_p99", "tv_max", "max_abs_probability_diff"):
        assert finite(overall[key]) and 0.0 <= overall[key] <= 1.0
    assert overall["tv_mean"] <= overall["tv_p99"] <= overall["tv_max"]
    equal = sum(s["hypotheses_equal"] for s in store["splits"].values())
    assert overall["hypotheses_equal_fraction"] == equal / sum(UTTERANCES.values())
    # The verdict is the stated tolerance applied to these figures. (With the
    # CPU's barely trained tiny teacher, whose CTC head's top labels nearly
    # tie, bf16 changed about 8 % of the hypotheses: the check says so.)
    tolerance = store["tolerance"]
    hypotheses_ok = (
        overall["hypotheses_equal_fraction"]
        >= tolerance["hypotheses_equal_fraction_min"]
    )
    distributions_ok = (
        overall["tv_mean"] <= tolerance["tv_mean_max"]
        and overall["tv_p99"] <= tolerance["tv_p99_max"]
    )
    verdict = "passed" if hypotheses_ok and distributions_ok else "failed"
    assert record["status"] == verdict
    if not hypotheses_ok:
        assert record["note"].startswith("bf16 store against fp32: hypotheses equal on")
    assert distributions_ok  # the distributions agree even so


@pytest.mark.slow  # the whole tiny check (minutes): .ci/run's slow step
def test_planning_figures_and_projections(tiny_check):
    _, _, data = tiny_check
    step = figures(data, "planning.step_time")
    assert step["sizes"] == gpu_planning.TINY_SIZES and step["parameters"] > 0
    for precision in ("fp32", "bf16"):
        p = step["precisions"][precision]
        assert p["steps_timed"] == p["steps_planned"] == 2
        assert finite(p["step_s_median"]) and p["step_s_median"] > 0
        assert p["losses_finite"] and p["peak_gpu_memory_allocated_mib"] is None
        assert 1.5 <= p["batch_mean_utterance_s"] <= 4.6
    assert finite(step["valid_batch_s"]) and step["valid_batch_s"] > 0
    kd = figures(data, "planning.kd_step")
    assert kd["teachers"] == 10 and list(kd["by_strategy"]) == ["weighted"]
    assert finite(kd["worst_ratio"]) and kd["worst_ratio"] > 0
    assert os.path.isfile(kd["json"])
    save = figures(data, "planning.save_throughput")
    for key in ("labelled_audio_s_per_s", "unlabelled_audio_s_per_s"):
        assert finite(save[key]) and save[key] > 0
    projection = figures(data, "planning.projection")
    assert projection["projection"] is True
    assert projection["kd_ratio_used"] == kd["worst_ratio"]
    assert sorted(projection["by_precision"]) == ["bf16", "fp32"]
    for precision, p in projection["by_precision"].items():
        assert p == gpu_planning.project(
            step["precisions"][precision]["step_s_median"],
            step["valid_batch_s"],
            kd["worst_ratio"],
            save["labelled_audio_s_per_s"],
            save["unlabelled_audio_s_per_s"],
        )
        assert all(finite(v) and v > 0 for v in p.values())


def test_projection_arithmetic():
    p = gpu_planning.project(0.5, 0.2, 1.1, 100.0, 80.0)
    steps, valid = 462, 50  # 3696 and 400 utterances in batches of 8
    epoch = steps * 0.5 + valid * 0.2
    assert p["timit_epoch_s"] == pytest.approx(epoch)
    assert p["teachers_s"] == pytest.approx(10 * 50 * epoch)
    assert p["store_s"] == pytest.approx(10 * (3696 + 400 + 192) * 3.08 / 100.0)
    student_epoch = steps * 0.5 * 1.1 + valid * 0.2
    assert p["student_s"] == pytest.approx(50 * student_epoch)
    assert p["recipe_s"] == pytest.approx(
        p["teachers_s"] + p["store_s"] + p["student_s"]
    )
    assert p["pool_store_s"] == pytest.approx(10 * 360000 / 80.0)
    pool_steps = math.ceil((3696 + 360000 / 3.08) / 8)
    assert p["pool_student_epoch_s"] == pytest.approx(pool_steps * 0.55 + valid * 0.2)
    assert p["recipe_h"] == pytest.approx(p["recipe_s"] / 3600)
    # Without a KD ratio or a throughput, what needs them is None.
    q = gpu_planning.project(0.5, 0.2, None, None, None)
    assert q["teachers_s"] == p["teachers_s"]
    assert q["store_s"] is q["student_s"] is q["recipe_s"] is q["pool_store_s"] is None


def test_a_command_past_its_deadline_is_stopped_with_what_it_started(tmp_path):
    log = tmp_path / "sleeper.log"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; "
        "time.sleep(120)'])\n"
        "print('started', child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    command = Command(["-c", code], str(log)).start()
    for _ in range(600):  # until the child runs (a loaded machine is slow)
        started = re.findall(r"^started (\d+)$", log.read_text(), re.M)
        if started:
            break
        time.sleep(0.1)
    result = command.wait(Deadline.after(1.0))
    assert result.stopped_at_deadline and result.returncode is None
    assert not result.ok and "stopped by its time budget" in result.describe()
    (child,) = started
    for _ in range(50):  # the child got SIGTERM with its process group
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(")")[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {child} still runs")


def test_the_check_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(RecipeError, match="--device cpu needs --tiny"):
        gpu_check.main(["--device", "cpu", "--output_folder", str(tmp_path / "a")])
    with pytest.raises(RecipeError, match="'stage' is neither a part"):
        gpu_check.main(["--device", "cpu", "--tiny", "--budget", "stage=10"])
    with pytest.raises(RecipeError, match="give seconds after '='"):
        gpu_check.main(["--device", "cpu", "--tiny", "--budget", "stages=ten"])
    with pytest.raises(RecipeError, match="--skip demo: not a part"):
        gpu_check.main(["--device", "cpu", "--tiny", "--skip", "demo"])
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / gpu_check.JSON_FILE).write_text("{}")
    with pytest.raises(RecipeError, match="holds an earlier check .* --overwrite"):
        gpu_check.main(["--device", "cpu", "--tiny", "--output_folder", str(earlier)])
    with pytest.raises(RecipeError, match="not a mini corpus .*make_mini_timit"):
        gpu_check.main(["--device", "cpu", "--tiny", "--data_folder", str(tmp_path)])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="not empty and holds no gpu_check.json"):
        gpu_check.main(
            ["--device", "cpu", "--tiny", "--output_folder", str(tmp_path / "other")]
        )


def test_cuda_without_a_gpu_stops_with_the_fix(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda runs the check here")
    out = tmp_path / "check"
    proc = run_script(["bench/gpu_check.py", "--output_folder", str(out)], check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "ERROR: --device cuda but torch.cuda.is_available() is False"
    )
    assert "Traceback" not in proc.stderr and not out.exists()
