"""The benchmark suite (bench/run_all.py and its new parts) at toy scale."""

import json
import os
import sys

import pytest
from conftest import REPO

BENCH = os.path.join(REPO, "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import prepare_speed  # noqa: E402
import run_all  # noqa: E402
import save_throughput  # noqa: E402

import mtkd.teachers  # noqa: E402
from mtkd.model import CTCAttentionASR  # noqa: E402


def test_prepare_speed_small_layouts(tmp_path):
    result = prepare_speed.run(
        layouts=("ldc", "riff_copy"), repeats=2, workdir=str(tmp_path), full=False
    )
    assert result["repeats"] == 2 and not result["full_size"]
    for layout in ("ldc", "riff_copy"):
        r = result["layouts"][layout]
        # fake_timit full=False: 8 train, 4 dev, 4 core test, 2 other speakers.
        assert r["utterances_on_disk"] == (8 + 4 + 4 + 2) * 10
        assert r["manifest_counts"] == {"train": 64, "valid": 32, "test": 32}
        assert len(r["seconds"]) == 2 and all(s > 0 for s in r["seconds"])
        assert min(r["seconds"]) <= r["median_seconds"] <= max(r["seconds"])
        assert r["utterances_on_disk_per_second"] > 0
        assert r["rerun_skip_seconds"] >= 0
    assert "| ldc | 180 | 64/32/32 |" in prepare_speed.markdown(result)
    assert not os.listdir(tmp_path)  # the corpora are removed


def test_save_throughput_on_tiny_teachers(mini_corpus, tiny_teachers, tmp_path):
    # One teacher keeps it short; the figures are per teacher anyway.
    teacher_list = tmp_path / "one_teacher.txt"
    teacher_list.write_text(tiny_teachers[1] + "\n")
    originals = (mtkd.teachers.unpadded_features, CTCAttentionASR.ctc_logits)
    result = save_throughput.run(
        mini_corpus, str(teacher_list), repeats=2, workdir=str(tmp_path / "work")
    )
    # The library is left as it was.
    assert (mtkd.teachers.unpadded_features, CTCAttentionASR.ctc_logits) == originals
    assert result["teachers"] == 1 and result["utterances"] == 80
    assert result["audio_seconds"] > 60  # the tiny corpus: 0.083 h in all
    assert len(result["runs"]) == 2
    for r in [*result["runs"], result["median"]]:
        assert r["throughput"] > 0 and r["wall_s"] > 0
        assert 0.0 < r["forward_s"] < r["wall_s"]
        assert 0.0 <= r["share_not_forward"] <= 1.0
        assert 0.0 <= r["share_not_forward_in_write_part"] <= r["share_not_forward"]
    run = result["runs"][0]
    # The teacher runs once per batch of 8 (48/16/16 utterances), its CTC head
    # once per utterance.
    n_batches = sum(-(-n // 8) for n in (48, 16, 16))
    assert run["calls"]["teacher_targets"] == n_batches
    assert run["calls"]["encoder"] == n_batches
    assert run["calls"]["ctc_head"] == 80
    parts = run["parts_s"]
    assert parts["teacher_targets"] <= parts["write_part"] <= run["wall_s"]
    forward = sum(parts[k] for k in save_throughput.FORWARD_PARTS)
    assert forward == pytest.approx(run["forward_s"])
    assert forward <= parts["teacher_targets"]
    audio, teachers = result["audio_seconds"], result["teachers"]
    assert run["throughput"] == pytest.approx(audio * teachers / run["wall_s"])
    assert "audio s per s per teacher" in save_throughput.markdown(result)


def fake_results(store_ratio, kd_ratios):
    """Made-up benchmark outputs in the shape the modules return."""
    store = {
        "teachers": 2,
        "hours": 0.5,
        "batch_size": 8,
        "store_bytes": 4e6,
        "original_bytes": 4e6 * store_ratio,
        "store_bytes_per_teacher_hour": 4e6,
        "original_bytes_per_teacher_hour": 4e6 * store_ratio,
        "ratio": store_ratio,
        "targets_vs_unpadded_original": {
            "pairs": 10,
            "hyp_equal": 10,
            "att_max_abs_diff": 2e-4,
        },
        "targets_vs_padded_original": {"pairs": 10, "hyp_equal": 6},
    }
    kd = {
        "rows": [
            {
                "teachers": n,
                "variant": variant,
                "strategy": strategy,
                "ratio": ratio,
                "ratio_cpu": ratio,
                "supervised_ms": 800.0,
                "kd_ms": 800.0 * ratio,
                "pairs_ms": [[1, 1, 1, 1]] * 6,
            }
            for (n, variant, strategy), ratio in kd_ratios.items()
        ]
    }
    save = {
        "teachers": 2,
        "audio_seconds": 300.0,
        "utterances": 80,
        "batch_size": 8,
        "repeats": 3,
        "runs": [],
        "median": {
            "throughput": 40.0,
            "share_not_forward": 0.3,
            "share_not_forward_in_write_part": 0.1,
        },
    }
    prepare = {
        "repeats": 3,
        "layouts": {
            "ldc": {
                "utterances_on_disk": 6300,
                "manifest_counts": {"train": 3696, "valid": 400, "test": 192},
                "median_seconds": 1.2,
            }
        },
    }
    outputs = {
        "store_size": store,
        "kd_step": kd,
        "save_throughput": save,
        "prepare_speed": prepare,
    }
    return {
        "command": "python bench/run_all.py --quick",
        "started": "2026-01-01T00:00:00+00:00",
        "seconds": 120.0,
        "setup_seconds": 30.0,
        "machine": {
            "cpu_model": "AMD EPYC",
            "cpu_cores": 2,
            "memory_gib": 23.4,
            "device_name": "cpu (no GPU)",
            "torch": "2.11.0",
            "speechbrain": "1.1.2",
            "torch_threads": 1,
        },
        "benchmarks": {
            name: run_all.SUMMARISE[name](out) for name, out in outputs.items()
        },
    }


@pytest.mark.parametrize(
    "store_ratio, n10, n100, store_met, kd_met",
    [
        (12.0, (1.02, 1.04), (1.3, 1.45), True, True),  # everything met
        (8.0, (1.02, 1.06), (1.3, 1.45), False, False),  # one strategy over at N10
        (10.0, (1.05, 1.0), (1.2, 1.51), True, False),  # goals inclusive; N100 over
    ],
)
def test_report_goals_met_or_not(tmp_path, store_ratio, n10, n100, store_met, kd_met):
    kd_ratios = {(1, "disagree", "average"): 0.98, (1, "disagree", "best"): 2.0}
    for n, ratios in ((10, n10), (100, n100)):
        for strategy, ratio in zip(("average", "weighted"), ratios, strict=True):
            kd_ratios[(n, "disagree", strategy)] = ratio
        kd_ratios[(n, "agree", "average")] = 9.0  # not judged
    results = fake_results(store_ratio, kd_ratios)
    json_path, md_path = tmp_path / "results.json", tmp_path / "RESULTS.md"
    text = run_all.write_results(results, str(json_path), str(md_path), {"x": "y"})

    saved = json.loads(json_path.read_text())
    assert md_path.read_text() == text
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # renamed
    assert saved["goals_met"] == {"store_size": store_met, "kd_step": kd_met}
    kd = saved["benchmarks"]["kd_step"]
    assert kd["goals"]["N10"]["met"] == (max(n10) <= 1.05)
    assert kd["goals"]["N100"]["met"] == (max(n100) <= 1.5)
    assert kd["goals"]["N1"]["met"] is None  # no goal at N = 1
    assert kd["goals"]["N1"]["worst_ratio"] == 2.0
    assert kd["goals"]["N10"]["worst_ratio"] == max(n10)
    assert kd["repeats"] == 6
    store = saved["benchmarks"]["store_size"]
    assert store["met"] == store_met and store["medians"]["ratio"] == store_ratio
    assert saved["benchmarks"]["save_throughput"]["met"] is None

    rows = {(r["benchmark"], r["figure"].split(" (")[0]): r for r in kd["rows"]}
    assert rows[("kd_step", "KD step / supervised step, N = 100")]["met"] == (
        max(n100) <= 1.5
    )
    # The markdown table: one line per row, met as yes / **no** / -.
    assert "| benchmark | figure | measured | goal | met |" in text
    ratio_line = next(x for x in text.splitlines() if "| original / store |" in x)
    assert ratio_line.endswith("| yes |" if store_met else "| **no** |")
    assert f"{store_ratio:.1f}x" in ratio_line and ">= 10x" in ratio_line
    lines = text.splitlines()
    n100_line = next(x for x in lines if x.startswith("| kd_step |") and "100 (" in x)
    assert n100_line.endswith("| yes |" if max(n100) <= 1.5 else "| **no** |")
    assert "| save_throughput |" in text and "| - | - |" in text
    assert "AMD EPYC, 2 cores" in text and "## x" in text


def test_judge():
    assert run_all.judge(10.0, ">=", 10.0) and not run_all.judge(9.99, ">=", 10.0)
    assert run_all.judge(1.05, "<=", 1.05) and not run_all.judge(1.051, "<=", 1.05)
    assert run_all.judge(None, "<=", 1.0) is None
    with pytest.raises(ValueError):
        run_all.judge(1.0, "<", 1.0)


def test_run_all_cli_writes_files(tmp_path, monkeypatch, capsys):
    # prepare_speed alone (no corpus or teachers needed), on a small layout.
    monkeypatch.setitem(
        run_all.MODES["quick"],
        "prepare",
        {"layouts": ("ldc",), "repeats": 2, "full": False},
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    json_path, md_path = tmp_path / "r.json", tmp_path / "R.md"
    argv = ["--quick", "--only", "prepare_speed", "--out", str(json_path)]
    argv += ["--md", str(md_path), "--workdir", str(tmp_path / "work")]
    assert run_all.main(argv) == 0
    saved = json.loads(json_path.read_text())
    assert saved["mode"] == "quick" and saved["goals_met"] == {}
    assert saved["machine"]["cpu_cores"] == os.cpu_count()
    assert saved["machine"]["torch"] and saved["machine"]["device_name"]
    entry = saved["benchmarks"]["prepare_speed"]
    assert entry["repeats"] == 2 and entry["medians"]["ldc"] > 0
    assert "prepare_timit s, ldc layout, 180 utterances" in md_path.read_text()
    assert "| prepare_speed |" in capsys.readouterr().out
    assert not (tmp_path / "work").exists()  # nothing to make for this one


@pytest.mark.slow  # 10-35 s: in .ci/run's slow step, out of the 10-minute command
def test_corpus_speed_times_each_synthesiser_side_by_side(tmp_path):
    """A toy corpus (3 speakers, 3 utterances each) per synthesiser, twice,
    in alternating order; Flite only where it is installed (else eSpeak NG
    alone, and an unknown synthesiser is an error either way)."""
    import corpus_speed

    from tools.mini_timit import MiniTimitError
    from tools.mini_timit.flite import flite_missing

    synthesisers = ("espeak",) if flite_missing() else ("espeak", "flite")
    result = corpus_speed.run(
        synthesisers, repeats=2, preset="tiny", train_speakers=1, dev_speakers=1,
        test_speakers=1, sx_per_speaker=1, si_per_speaker=0,
    )  # fmt: skip
    assert result["order"] == [list(synthesisers), list(synthesisers)[::-1]]
    for synthesiser in synthesisers:
        runs = result["runs"][synthesiser]
        assert len(runs) == 2 and all(r["utterances"] == 3 * 3 for r in runs)
        median = result["median"][synthesiser]
        assert min(r["wall_s"] for r in runs) <= median["wall_s"]
        assert median["wall_s"] <= max(r["wall_s"] for r in runs)
        assert median["s_per_audio_min"] > 0
    assert result["median"]["espeak"]["vs_espeak"] == 1.0
    assert result["median"]["espeak"]["cpu_vs_espeak"] == 1.0
    for synthesiser in synthesisers:
        for ratios in result["vs_espeak_per_repeat"][synthesiser].values():
            assert len(ratios) == 2 and all(r > 0 for r in ratios)
        assert all(r["cpu_s"] > 0 for r in result["runs"][synthesiser])
    assert result["machine"]["cores"] == os.cpu_count()
    with pytest.raises(MiniTimitError, match="synthesisers \\['festival'\\]"):
        corpus_speed.run(("festival",), repeats=1)


def test_unlabelled_scores_cost_side_by_side(mini_corpus, teacher_list, tmp_path):
    """bench/unlabelled_cost.py --scores at toy scale: the labelled parts
    once, then per repeat the unlabelled part with and without the scores in
    alternating order; the whole run's ratio adds the labelled time."""
    import unlabelled_cost

    out = str(tmp_path / "scores.json")
    unlabelled_cost.main(
        ["--data_folder", mini_corpus, "--teachers", teacher_list, "--unlabelled",
         "timit_sa", "--repeats", "2", "--scores", "--out", out]
    )  # fmt: skip
    result = json.load(open(out))
    assert [r["order"] for r in result["runs"]] == [
        ["with", "without"], ["without", "with"],
    ]  # fmt: skip
    assert result["labelled_hours"] > 0 and result["unlabelled_hours"] > 0
    hours = result["labelled_hours"] + result["unlabelled_hours"]
    for clock, labelled in (("wall", "labelled_s"), ("cpu", "labelled_cpu_s")):
        for run in result["runs"]:
            got = run[clock]
            with_s = got["unlabelled_s_with_scores"]
            without_s = got["unlabelled_s_without_scores"]
            assert with_s > 0 and without_s > 0
            assert got["unlabelled_ratio"] == pytest.approx(with_s / without_s)
            whole = (result[labelled] + with_s) / hours
            assert got["whole_s_per_hour_with_scores"] == pytest.approx(whole)
            assert got["whole_ratio"] == pytest.approx(
                whole / ((result[labelled] + without_s) / hours)
            )
            # The scores' own time, measured inside the runs with them.
            assert 0 < got["scores_s"] < with_s
            assert got["scores_share_unlabelled"] == pytest.approx(
                got["scores_s"] / without_s
            )
        ratios = sorted(r[clock]["whole_ratio"] for r in result["runs"])
        assert result["median"][clock]["whole_ratio"] == pytest.approx(sum(ratios) / 2)


def test_the_scores_stub_writes_no_score():
    """What the bench times without the scores: the same consensus, NaN in
    place of every score."""
    import numpy as np
    import unlabelled_cost

    from mtkd.consensus import consensus

    hyps = [[1, 2, 3], [1, 2, 4], [1, 2, 3, 5]]
    chosen, distances = consensus(hyps)
    with unlabelled_cost.without_scores():
        stub = mtkd.teachers.unlabelled_scores([distances], [hyps], [hyps], [chosen])
    assert np.isnan(stub["loo_ctc_per"]).all() and stub["loo_teacher"].shape == (1, 3)
    real = mtkd.teachers.unlabelled_scores([distances], [hyps], [hyps], [chosen])
    assert real["loo_teacher"].tolist() == [[1, 0, 0]]


def test_perturbed_teachers_are_noisy_copies(tiny_teachers, tmp_path):
    """bench/perturbed_teachers.py: two copies of a teacher's run, each with
    noise on its weights; the list holds the teacher and the copies, which
    load as teachers; the original is untouched."""
    import perturbed_teachers
    import torch

    run = os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))
    before = torch.load(tiny_teachers[0], weights_only=True)
    perturbed_teachers.main([run, str(tmp_path / "out"), "--copies", "2"])
    lines = mtkd.teachers.read_teacher_list(str(tmp_path / "out" / "teachers.txt"))
    assert [path for _, path in lines][0] == tiny_teachers[0]
    weights = [torch.load(path, weights_only=True) for _, path in lines]
    name = next(k for k, v in before.items() if v.is_floating_point() and v.numel() > 1)
    assert torch.equal(weights[0][name], before[name])
    for copy in weights[1:]:
        change = (copy[name] - before[name]).std() / before[name].std()
        assert 0.02 < float(change) < 0.1  # --noise 0.05 of each tensor's std
    assert not torch.equal(weights[1][name], weights[2][name])
    for k, (_, path) in enumerate(lines):
        assert mtkd.teachers.load_teacher(path, index=k).files.labels
