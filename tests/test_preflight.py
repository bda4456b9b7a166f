"""GPU preflight (kernels for the GPU found), precision options, autocast.

No GPU here: torch.cuda is faked with monkeypatch. What runs for real on CPU:
bf16 autocast in save_teachers.py.
"""

import contextlib
import os
import warnings

import pytest
import torch
from conftest import REPO

import save_teachers
import train_kd
import train_teacher
from mtkd import RecipeError, cluster
from mtkd.hparams import run_stage

# What `torch.cuda.get_arch_list()` says for the PyPI (CUDA 13) build of 2.11.
CUDA13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
FIX = (
    "pip install torch==2.11.0 torchaudio==2.11.0 "
    "--index-url https://download.pytorch.org/whl/cu126"
)


def fake_gpu(monkeypatch, capability, archs, name="Tesla V100-SXM2-32GB"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize(
    "capability, archs, fits",
    [
        ((7, 0), CUDA13_ARCHS, False),  # V100 under the PyPI build
        ((6, 1), CUDA13_ARCHS, False),  # Pascal
        ((7, 0), CU126_ARCHS, True),  # V100 under the cu126 build
        ((8, 6), ["sm_80"], True),  # same major, higher minor: binary runs
        ((8, 0), ["sm_86"], False),  # lower minor: it does not
        ((12, 1), CUDA13_ARCHS, True),
        ((13, 0), ["sm_90", "compute_90"], True),  # PTX is compiled for newer GPUs
        ((9, 0), ["sm_90a"], True),
    ],
)
def test_kernels_fit(capability, archs, fits):
    assert cluster.kernels_fit(capability, archs) is fits


def test_v100_under_cuda13_build_stops_with_the_fix(monkeypatch):
    fake_gpu(monkeypatch, (7, 0), CUDA13_ARCHS)
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    with pytest.raises(RecipeError) as err:
        cluster.check_cuda_kernels("cuda:0")
    message = str(err.value)
    assert "Tesla V100-SXM2-32GB (sm_70)" in message
    assert "sm_75 sm_80" in message and FIX in message


def test_supported_gpu_and_cpu_pass(monkeypatch):
    fake_gpu(monkeypatch, (9, 0), CUDA13_ARCHS, name="H100")
    opts = {"device": "cuda:0", "precision": "bf16", "eval_precision": "fp32"}
    assert cluster.preflight(opts) == "cuda:0"
    # On CPU the CUDA build is never asked about its kernels.
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: [])
    opts = {"device": "cpu", "precision": "bf16", "eval_precision": "bf16"}
    assert cluster.preflight(opts) == "cpu"


def test_cuda_without_a_visible_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RecipeError, match="--device cuda.*is_available"):
        cluster.check_cuda_kernels("cuda")


def test_fp16_on_cpu_is_a_clear_error():
    for key in ("precision", "eval_precision"):
        opts = {"device": "cpu", "precision": "fp32", "eval_precision": "fp32"}
        opts[key] = "fp16"
        with pytest.raises(RecipeError, match="fp16 needs a CUDA GPU"):
            cluster.preflight(opts)


@pytest.mark.parametrize(
    "script, args",
    [
        (train_teacher, ["hparams/teachers/tea0.yaml"]),
        (save_teachers, ["hparams/save_teachers.yaml", "--tea_models_dir", "t.txt"]),
        (train_kd, ["hparams/train_kd.yaml", "--tea_infer_dir", "store"]),
    ],
)
def test_every_stage_stops_first_on_a_gpu_without_kernels(
    script, args, monkeypatch, tmp_path, capsys
):
    fake_gpu(monkeypatch, (7, 0), CUDA13_ARCHS)
    out = tmp_path / "out"
    argv = [os.path.join(REPO, args[0]), *args[1:], "--data_folder", str(tmp_path)]
    argv += ["--output_folder", str(out), "--device", "cuda"]
    with pytest.raises(SystemExit) as exit_info:
        run_stage(script.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: The GPU Tesla V100") and "whl/cu126" in err
    # Before any work: no resolved hyperparameters, no manifests.
    assert not (out / "hyperparams.yaml").exists()
    assert not (out / "train.json").exists()


def test_autocast_choice():
    assert isinstance(cluster.autocast("cuda", "fp32"), contextlib.nullcontext)
    with cluster.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available" on this machine
        ctx = cluster.autocast("cuda:1", "fp16")
    assert ctx.device == "cuda" and ctx.fast_dtype == torch.float16


def test_save_teachers_runs_teachers_under_autocast(
    mini_corpus, teacher_list, tmp_path, monkeypatch
):
    """--precision bf16 on CPU: teachers run under bf16 autocast; the store
    keeps float16 distributions as always."""
    import h5py

    import mtkd.store.writer as store_module

    seen = []
    real = store_module.teacher_targets

    def spy(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "teacher_targets", spy)
    save_teachers.main(
        [
            os.path.join(REPO, "hparams/save_teachers.yaml"),
            "--data_folder", mini_corpus, "--tea_models_dir", teacher_list,
            "--output_folder", str(tmp_path), "--device", "cpu", "--noprogressbar",
            "--teacher_index", "0", "--precision", "bf16", "--batch_size", "16",
        ]
    )  # fmt: skip
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    with h5py.File(tmp_path / "store" / "part-t000.h5") as f:
        assert f["train/att_dist"].dtype == "float16"
