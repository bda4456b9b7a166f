"""The recipe on a CUDA GPU: what the CPU tests cannot check.

Every test here needs a CUDA GPU and is skipped, with that reason, without
one; ``bench/gpu_check.py`` runs them on a GPU (its ``tests`` part). The
stages run at test size on the tiny mini corpus (the session fixtures of
``tests/conftest.py``, whose teachers are trained on the CPU).
"""

import math
import os
import sys

import pytest
import torch
from conftest import REPO, TINY_MODEL, TINY_RUN, run_script

BENCH = os.path.join(REPO, "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

from gpu_precision import compare_stores, epoch_losses  # noqa: E402

from mtkd import cluster  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (bench/gpu_check.py runs these tests on one)",
)
PRECISIONS = ("fp32", "bf16", "fp16")
# The GPU store against the CPU one (both fp32): not bit-equal (cuDNN's
# convolutions use TF32 by default, other kernels sum in another order, and
# the store rounds to float16), but a padding or device mistake would show
# far above these.
HYPOTHESES_EQUAL = 0.95
TV_MEAN_MAX = 0.01


def per_report(folder):
    """(PER, CTC_PER) of a run's per_test.txt first line."""
    words = (folder / "per_test.txt").read_text().split()
    assert words[0] == "PER:" and words[2] == "CTC_PER:", words[:4]
    return float(words[1]), float(words[3])


def test_preflight_passes_on_this_gpu():
    for precision in PRECISIONS:
        options = {"device": "cuda", "precision": precision, "eval_precision": "fp32"}
        assert cluster.preflight(options) == "cuda"
    capability = torch.cuda.get_device_capability(0)
    assert cluster.kernels_fit(capability, torch.cuda.get_arch_list())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_teacher_trains_and_tests_on_the_gpu(mini_corpus, tmp_path, precision):
    out = tmp_path / precision
    run_script(
        [
            "train_teacher.py", "hparams/teachers/tea0.yaml",
            "--data_folder", mini_corpus, "--output_folder", str(out),
            "--precision", precision, *TINY_MODEL, *TINY_RUN,
            "--device", "cuda", "--noprogressbar",
        ]
    )  # fmt: skip
    losses = epoch_losses(str(out / "train_log.txt"))
    assert len(losses) == 1 and math.isfinite(losses[0])
    per, ctc_per = per_report(out)
    assert math.isfinite(per) and math.isfinite(ctc_per)
    # fp16 trains with SpeechBrain's gradient scaler, kept in the checkpoint.
    (checkpoint,) = [p for p in (out / "save").iterdir() if p.name.startswith("CKPT+")]
    assert (checkpoint / "scaler.ckpt").exists() == (precision == "fp16")


def test_store_on_the_gpu_equals_the_store_on_the_cpu(
    mini_corpus, teacher_list, teacher_store, tmp_path
):
    import save_teachers

    # The options of the CPU store (tests/conftest.py teacher_store).
    save_teachers.main(
        [
            os.path.join(REPO, "hparams/save_teachers.yaml"),
            "--data_folder", mini_corpus, "--tea_models_dir", teacher_list,
            "--output_folder", str(tmp_path), "--device", "cuda",
            "--noprogressbar", "--batch_size", "5", "--sorting", "descending",
        ]
    )  # fmt: skip
    comparison = compare_stores(teacher_store, str(tmp_path / "store"))
    assert sorted(comparison["splits"]) == ["test", "train", "valid"]
    assert comparison["all"]["hypothesis_pairs"] == 2 * (48 + 16 + 16)
    assert comparison["all"]["hypotheses_equal_fraction"] >= HYPOTHESES_EQUAL
    assert comparison["all"]["tv_mean"] <= TV_MEAN_MAX


def test_student_distils_on_the_gpu(mini_corpus, teacher_store, tmp_path):
    out = tmp_path / "student"
    run_script(
        [
            "train_kd.py", "hparams/train_kd.yaml", "--data_folder", mini_corpus,
            "--tea_infer_dir", teacher_store, "--output_folder", str(out),
            "--strategy", "weighted", "--pretrain", "False", "--precision", "bf16",
            *TINY_MODEL, *TINY_RUN, "--device", "cuda", "--noprogressbar",
        ]
    )  # fmt: skip
    losses = epoch_losses(str(out / "train_log.txt"))
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert all(math.isfinite(x) for x in per_report(out))
