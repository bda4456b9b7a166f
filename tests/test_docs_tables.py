"""The committed result tables are what their results files say: each table
is regenerated here from the results file beside it and must appear in the
page verbatim (a figure edited by hand, or a table left behind when the
results were rerun, fails)."""

import glob
import json
import os
import sys

import pytest
from conftest import REPO

from mtkd_tools.results import markdown_table, runs_table, valid_name
from mtkd_tools.significance import (
    describe,
    paired_bootstrap,
    read_utterances,
    seed_level_tests,
)

sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.join(REPO, "tools"))
import retest_results  # noqa: E402
import run_all  # noqa: E402

STUDY_RESULTS = sorted(
    glob.glob(
        os.path.join(REPO, "docs", "kd_study", "**", "results.json"), recursive=True
    )
)


def test_there_are_study_results_to_check():
    assert len(STUDY_RESULTS) >= 4


@pytest.mark.parametrize("path", STUDY_RESULTS, ids=lambda p: os.path.relpath(p, REPO))
def test_study_tables_are_regenerated_from_their_results_file(path):
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(os.path.dirname(path), "RESULTS.md"), encoding="utf-8") as f:
        page = f.read()
    # Models written before they carried their selection metric: the runs'.
    valid = valid_name(results["runs"])
    assert markdown_table(results["models"], valid=valid) in page
    assert runs_table(results["runs"]) in page
    for comparison in results["comparisons"]:
        assert comparison["sentence"] in page


COMPARED = sorted(
    glob.glob(os.path.join(REPO, "docs", "**", "results.json"), recursive=True)
)


@pytest.mark.parametrize("path", COMPARED, ids=lambda p: os.path.relpath(p, REPO))
def test_comparison_lines_are_recomputed(path):
    """Every comparison line (and confirmation) under a committed table is
    recomputed: from the per-utterance file beside it where there is one
    (the whole bootstrap, by speaker, and the seed-level tests), else the
    seed-level tests from the per-seed differences the file holds (runs
    from before per-utterance files were kept; their bootstrap is as it
    was computed then)."""
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    utterances = os.path.join(os.path.dirname(path), "utterances.json")
    counts = read_utterances(utterances) if os.path.isfile(utterances) else None
    records = results.get("comparisons", []) + (results.get("confirmations") or [])
    for record in records:
        prefix, label = retest_results.split_sentence(record)
        result = record["result"]
        if counts is not None:
            result = paired_bootstrap(
                [counts[k] for k in record["baseline_runs"]],
                [counts[k] for k in record["student_runs"]],
            )
        else:
            assert result["seed_level"] == seed_level_tests(result["seed_differences"])
        assert record["sentence"] == prefix + describe(record["name"], label, result)


def test_benchmark_table_is_regenerated_from_its_results_file():
    with open(os.path.join(REPO, "bench", "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    with open(os.path.join(REPO, "bench", "RESULTS.md"), encoding="utf-8") as f:
        page = f.read()
    assert run_all.table(run_all.all_rows(results)) in page
