"""What a stage does once per start, not several times (issue 34): the
device preflight, the value-range check, and the store's verification
(on the main process only under DDP)."""

import multiprocessing
import os

import pytest
import speechbrain as sb
from conftest import REPO

import save_teachers
import train_kd
import train_teacher
from mtkd import cluster
from mtkd import hparams as hparams_module
from mtkd.distill import verify_store_on_main
from mtkd.hparams import RANGE_KEYS, HparamsError, load_hparams
from mtkd.store import StoreError

TEA0_YAML = os.path.join(REPO, "hparams/teachers/tea0.yaml")
SAVE_YAML = os.path.join(REPO, "hparams/save_teachers.yaml")
KD_YAML = os.path.join(REPO, "hparams/train_kd.yaml")


@pytest.fixture
def data_folder(tmp_path):
    """A folder standing for TIMIT: these runs stop before reading it."""
    folder = tmp_path / "TIMIT"
    folder.mkdir()
    return str(folder)


class _Stop(Exception):
    """Raised where the test has seen enough of a stage's start."""


def _stop(*args, **kwargs):
    raise _Stop


@pytest.mark.parametrize("stage", ["train_teacher", "save_teachers", "train_kd"])
def test_the_device_preflight_runs_once_per_stage_start(
    stage, monkeypatch, data_folder, tmp_path
):
    calls = []
    real = cluster.preflight

    def counted(run_opts):
        calls.append(run_opts["device"])
        return real(run_opts)

    monkeypatch.setattr(cluster, "preflight", counted)
    for handler in ("requeue_on_signal", "exit_on_signal"):
        monkeypatch.setattr(cluster, handler, lambda: None)
    monkeypatch.setattr(sb, "create_experiment_directory", _stop)
    monkeypatch.setattr(save_teachers, "check_teacher_list", _stop)
    teachers = tmp_path / "teachers.txt"
    teachers.write_text("\n")
    main, argv = {
        "train_teacher": (train_teacher.main, [TEA0_YAML]),
        "save_teachers": (save_teachers.main, [SAVE_YAML, "--teacher_list",
                                               str(teachers)]),
        "train_kd": (train_kd.main, [KD_YAML, "--tea_infer_dir", data_folder,
                                     "--pretrain", "False"]),
    }[stage]  # fmt: skip
    argv += ["--data_folder", data_folder, "--output_folder", str(tmp_path / "o")]
    with pytest.raises(_Stop):
        main([*argv, "--device", "cpu"])
    assert calls == ["cpu"]


def test_value_ranges_are_checked_once_per_value(monkeypatch, data_folder, tmp_path):
    checked = []
    real = hparams_module.check_value_ranges

    def counted(values, hparams_file):
        checked.extend(key for key in values if key in RANGE_KEYS)
        return real(values, hparams_file)

    monkeypatch.setattr(hparams_module, "check_value_ranges", counted)
    load_hparams(
        [TEA0_YAML, "--data_folder", data_folder, "--output_folder",
         str(tmp_path / "o"), "--batch_size", "4"]
    )  # fmt: skip
    assert "batch_size" in checked and "lr" in checked
    assert sorted(checked) == sorted(set(checked))  # none twice
    with pytest.raises(HparamsError, match="`batch_size` must be greater than 0"):
        load_hparams([TEA0_YAML, "--data_folder", data_folder, "--batch_size", "0"])


class _Store:
    """Stands for a TeacherStore: writes who verified it."""

    def __init__(self, folder, damaged):
        self.folder, self.damaged = folder, damaged

    def verify(self):
        rank = os.environ["RANK"]
        with open(os.path.join(self.folder, f"verified-by-{rank}"), "w"):
            pass
        if self.damaged:
            raise StoreError("part-t000.h5 is damaged")


def _rank(rank, folder, rendezvous, damaged):
    """One DDP rank calling verify_store_on_main; writes how it ended."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2
    )
    try:
        verify_store_on_main(_Store(folder, damaged))
        outcome = "trains on"
    except StoreError as err:
        outcome = f"ERROR: {err}"
    except SystemExit as stop:
        outcome = f"exit {stop.code}"
    finally:
        dist.destroy_process_group()
    with open(os.path.join(folder, f"outcome-{rank}"), "w") as f:
        f.write(outcome)


@pytest.mark.parametrize("damaged", [False, True])
def test_the_store_is_verified_on_the_main_process_only(tmp_path, damaged):
    """Under DDP the main process reads the store through once; on a damaged
    store it gives the one error and the other rank stops with status 2."""
    context = multiprocessing.get_context("fork")
    folder, rendezvous = tmp_path / "store", str(tmp_path / "rendezvous")
    folder.mkdir()
    ranks = [
        context.Process(target=_rank, args=(rank, str(folder), rendezvous, damaged))
        for rank in (0, 1)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(120)
        assert process.exitcode == 0
    assert sorted(os.listdir(folder)) == [
        "outcome-0", "outcome-1", "verified-by-0",
    ]  # fmt: skip
    outcomes = [(folder / f"outcome-{rank}").read_text() for rank in (0, 1)]
    if damaged:
        assert outcomes == ["ERROR: part-t000.h5 is damaged", "exit 2"]
    else:
        assert outcomes == ["trains on", "trains on"]
