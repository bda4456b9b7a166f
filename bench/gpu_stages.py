"""The recipe's stages on the device, for ``bench/gpu_check.py``.

Each function is one check: ``check(ctx, deadline) -> figures`` (a JSON-able
dict), raising ``CheckFailed`` or ``CheckSkipped`` (``bench/gpu_budget.py``).
``ctx`` is gpu_check's ``CheckContext``: ``device``, ``tiny``, ``out`` (the
output folder), ``log_file(name)``, ``say(text)`` and ``need(check)`` (the
figures of an earlier check that passed).

- ``demo_quick`` / ``demo_unlabelled``: ``run_demo.py --quick`` and ``--quick
  --unlabelled`` on the device, as users run them (teachers, the store and its
  unlabelled part, a student per strategy, the self-training student, the
  results table); the quick demo on the check's corpus (``--data_folder``, the
  same tiny corpus it would make), the unlabelled one on the corpus and pool
  it makes; the figures are each model's test PER and wall time from the
  demo's ``results.json``;
- ``export`` and ``transcribe``: ``export_model.py`` on the quick demo's
  distilled student, then ``transcribe.py`` on the corpus's test folder on the
  device;
- ``cuda_tests``: the tests that need a CUDA GPU (``tests/test_cuda.py``) and,
  on a GPU, the preflight tests with faked capabilities
  (``tests/test_preflight.py``), through pytest; the figures are pytest's
  counts and every skip's reason.
"""

import json
import math
import os
import xml.etree.ElementTree as ET

from gpu_budget import CheckFailed, run_command

from mtkd.store import TeacherStore
from mtkd.store.format import UNLABELLED
from mtkd_tools.export import AUDIO_EXTENSIONS

# run_demo.py options of each demo check.
DEMOS = {"demo_quick": ["--quick"], "demo_unlabelled": ["--quick", "--unlabelled"]}
# --tiny: one teacher, one distilled strategy, no size/speed columns (the
# quick demo as it is takes minutes on a small CPU).
TINY_DEMO = ["--num_teachers", "1", "--strategies", "best", "--cost_files", "0"]
# Runs side by side in each demo on a GPU (run_demo.py's default there is 1).
GPU_DEMO_JOBS = 2
# The distilled student that export_model.py exports (every demo trains it).
EXPORTED_STUDENT = os.path.join("students", "best", "seed2000")
CUDA_TEST_FILE = "tests/test_cuda.py"
PREFLIGHT_TEST_FILE = "tests/test_preflight.py"


def demo_folder(ctx, name):
    return os.path.join(ctx.out, name)


def demo_argv(ctx, name):
    """The run_demo.py command line of demo ``name`` (a key of DEMOS)."""
    argv = ["run_demo.py", *DEMOS[name], "--device", ctx.device]
    argv += ["--output_folder", demo_folder(ctx, name)]
    if "--unlabelled" not in DEMOS[name]:
        # The check's corpus (the same as the quick demo's: made once); the
        # unlabelled demo makes its own with its pool, as users run it.
        argv += ["--data_folder", ctx.need("inputs.corpus")["data_folder"]]
    if ctx.tiny:
        argv += TINY_DEMO
    elif ctx.device.startswith("cuda"):
        argv += ["--jobs", str(GPU_DEMO_JOBS)]
    return argv


def run_demo(ctx, name, deadline):
    """One quick demo on the device; its models' test PERs and times."""
    argv = demo_argv(ctx, name)
    result = run_command(argv, ctx.log_file(name), deadline, threads=ctx.threads)
    if not result.ok:
        raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    folder = demo_folder(ctx, name)
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    models = {
        run["name"]: {
            "kind": run["kind"],
            "parameters": run["parameters"],
            "test_PER_percent": run["test_PER"],
            "test_CTC_PER_percent": run["test_CTC_PER"],
            "wall_time_s": run["wall_time_s"],
        }
        for run in runs
    }
    figures = {
        "command": "python " + " ".join(argv),
        "seconds": result.seconds,
        "cpu_s": result.cpu_s,
        "output_folder": folder,
        "models": models,
    }
    bad = [
        model
        for model, m in models.items()
        if not all(
            isinstance(m[k], (int, float)) and math.isfinite(m[k])
            for k in ("test_PER_percent", "test_CTC_PER_percent")
        )
    ]
    if bad or "student-baseline" not in models:
        raise CheckFailed(
            f"{name}: results.json lacks a finite test PER for "
            f"{', '.join(bad) or 'student-baseline'} ({folder})"
        )
    if "--unlabelled" in DEMOS[name]:
        store = TeacherStore(os.path.join(folder, "save_teachers", "store"))
        try:
            if not store.has_unlabelled:
                raise CheckFailed(f"{name}: the store has no unlabelled part")
            figures["store_unlabelled_utterances"] = len(
                store.utterance_ids(UNLABELLED)
            )
        finally:
            store.close()
        if "student-pseudo" not in models:
            raise CheckFailed(f"{name}: no self-training student (student-pseudo)")
    return figures


def demo_quick(ctx, deadline):
    return run_demo(ctx, "demo_quick", deadline)


def demo_unlabelled(ctx, deadline):
    return run_demo(ctx, "demo_unlabelled", deadline)


def export(ctx, deadline):
    """export_model.py on the quick demo's distilled student."""
    demo = ctx.need("stages.demo_quick")
    source = os.path.join(demo["output_folder"], EXPORTED_STUDENT)
    target = os.path.join(ctx.out, "exported_student")
    argv = ["export_model.py", "--from", source, "--to", target]
    result = run_command(argv, ctx.log_file("export"), deadline, threads=ctx.threads)
    if not result.ok:
        raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    return {
        "command": "python " + " ".join(argv),
        "seconds": result.seconds,
        "cpu_s": result.cpu_s,
        "model_folder": target,
        "files": sorted(os.listdir(target)),
    }


def audio_files(folder):
    """Audio files under ``folder`` (what transcribe.py finds there)."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(AUDIO_EXTENSIONS)
    )


def transcribe(ctx, deadline):
    """transcribe.py with the exported student over the demo's test folder."""
    model = ctx.need("stages.export")["model_folder"]
    test = os.path.join(ctx.need("inputs.corpus")["data_folder"], "TEST")
    argv = ["transcribe.py", model, test, "--device", ctx.device, "--json"]
    log = ctx.log_file("transcribe")
    result = run_command(argv, log, deadline, threads=ctx.threads)
    if not result.ok:
        raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    lines = []
    with open(log, encoding="utf-8") as f:
        for line in f:
            if line.startswith("{"):
                lines.append(json.loads(line))
    expected = audio_files(test)
    if sorted(x["path"] for x in lines) != expected:
        raise CheckFailed(
            f"transcribe.py printed {len(lines)} transcriptions for "
            f"{len(expected)} audio files under {test} (log: {log})"
        )
    audio_s = sum(x["duration"] for x in lines)
    return {
        "command": "python " + " ".join(argv),
        "seconds": result.seconds,
        "cpu_s": result.cpu_s,
        "files": len(lines),
        "audio_s": audio_s,
        "empty_transcriptions": sum(1 for x in lines if not x["phones"].strip()),
        # Wall time of the whole command (model loading included) per audio second.
        "real_time_factor": result.seconds / audio_s,
    }


def junit_counts(path):
    """pytest's JUnit XML -> {tests, passed, failed, errors, skipped}: names of
    failed and erroring tests, and each skipped test with its reason."""
    root = ET.parse(path).getroot()
    cases = root.iter("testcase")
    out = {"tests": 0, "passed": 0, "failed": [], "errors": [], "skipped": []}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        out["tests"] += 1
        if case.find("failure") is not None:
            out["failed"].append(name)
        elif case.find("error") is not None:
            out["errors"].append(name)
        elif case.find("skipped") is not None:
            reason = case.find("skipped").get("message", "")
            out["skipped"].append({"test": name, "reason": reason})
        else:
            out["passed"] += 1
    return out


def cuda_tests(ctx, deadline):
    """The tests that need a CUDA GPU (and on a GPU the faked-capability
    preflight tests), with pytest."""
    files = [CUDA_TEST_FILE]
    if ctx.device.startswith("cuda"):
        files.append(PREFLIGHT_TEST_FILE)
    xml = os.path.join(ctx.out, "logs", "cuda_tests.xml")
    argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    argv += files
    result = run_command(
        argv, ctx.log_file("cuda_tests"), deadline, threads=ctx.threads
    )
    if result.stopped_at_deadline or not os.path.isfile(xml):
        raise CheckFailed(f"{result.describe()}\n{result.log_tail()}")
    counts = junit_counts(xml)
    figures = {
        "command": "python " + " ".join(argv),
        "seconds": result.seconds,
        "cpu_s": result.cpu_s,
        "files": files,
        **counts,
    }
    if result.returncode != 0 or counts["failed"] or counts["errors"]:
        raise CheckFailed(
            f"pytest: {len(counts['failed'])} failed, {len(counts['errors'])} "
            f"errors ({', '.join(counts['failed'] + counts['errors'])}); "
            f"{result.describe()}"
        )
    return figures
