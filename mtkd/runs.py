"""What a run of ``train_teacher.py`` or ``train_kd.py`` leaves in its output
folder, read in one place (``RunFolder``)::

    <run>/hyperparams.yaml              every value the run used (resolved)
    <run>/train_log.txt                 a line per epoch, then the test line
    <run>/per_test.txt                  "PER: x  CTC_PER: y", then per utterance
    <run>/save/model_config.json        CTCAttentionASR kwargs, features, indices
    <run>/save/label_encoder.txt        the labels (their indices are the ids)
    <run>/save/CKPT+.../model.ckpt      the weights (a teacher list file's line)
    <run>/save/CKPT+.../normalize.ckpt  global feature statistics
    <run>/run.lock                      while a run writes it (``RunLock``)
"""

import json
import logging
import os
import re
import socket

import ruamel.yaml
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import if_main_process, is_distributed_initialized

from mtkd import RecipeError
from mtkd.locks import SingleWriterLock, held_locks, parse_owner
from mtkd.model import MODEL_CONFIG_FILE

logger = logging.getLogger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
TRAIN_LOG_FILE = "train_log.txt"
PER_TEST_FILE = "per_test.txt"
SAVE_FOLDER = "save"
LABEL_ENCODER_FILE = "label_encoder.txt"
RUN_LOCK_FILE = "run.lock"


class RunFolder:
    """The files of one run's output folder (nothing is read until asked)."""

    def __init__(self, folder):
        self.folder = os.path.abspath(folder)

    @classmethod
    def of_checkpoint(cls, model_ckpt):
        """The run a ``save/CKPT+*/model.ckpt`` belongs to."""
        return cls(os.path.dirname(os.path.dirname(os.path.dirname(model_ckpt))))

    @property
    def hparams_file(self):
        return os.path.join(self.folder, HPARAMS_FILE)

    @property
    def train_log(self):
        return os.path.join(self.folder, TRAIN_LOG_FILE)

    @property
    def per_test_file(self):
        return os.path.join(self.folder, PER_TEST_FILE)

    @property
    def save_folder(self):
        return os.path.join(self.folder, SAVE_FOLDER)

    @property
    def model_config_file(self):
        return os.path.join(self.save_folder, MODEL_CONFIG_FILE)

    def label_encoder_file(self, config=None):
        """The label encoder that ``config`` (model_config.json) names."""
        name = (config or {}).get("label_encoder", LABEL_ENCODER_FILE)
        return os.path.join(self.save_folder, name)

    def hyperparams(self):
        """hyperparams.yaml's top level (see ``read_hyperparams``)."""
        return read_hyperparams(self.hparams_file)

    def model_config(self):
        """save/model_config.json as a dict (json errors are the caller's)."""
        with open(self.model_config_file, encoding="utf-8") as f:
            return json.load(f)

    def best_checkpoint(self):
        """The checkpoint with the lowest ``selection`` (see ``best_checkpoint``)."""
        return best_checkpoint(self.save_folder)

    def test_pers(self):
        """{"PER": x, "CTC_PER": y} of per_test.txt (see ``read_per_summary``)."""
        return read_per_summary(self.per_test_file)


def read_hyperparams(path):
    """The top-level values of a resolved ``hyperparams.yaml``, read as plain
    YAML (nothing is built): ruamel's round-trip values, so a ``!new:`` object
    keeps its tag (``value.tag.value``) and keyword arguments. Raises
    ``ruamel.yaml.YAMLError`` for a file that is not YAML (the caller says what
    to do)."""
    with open(path, encoding="utf-8") as f:
        return ruamel.yaml.YAML(typ="rt").load(f) or {}


def plain_value(value):
    """ruamel's round-trip values (CommentedMap, ScalarFloat, ...) as plain
    Python ones: dict, list, bool, int, float, None or str."""
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def read_per_summary(path):
    """The figures of a ``per_test.txt``'s first line, ``{"PER": 21.3,
    "CTC_PER": 24.0}`` (percent); {} when the line holds none."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return {k: float(v) for k, v in re.findall(r"(\w+): ([-+0-9.eE]+)", first)}


def best_checkpoint(save_folder):
    """The checkpoint with the lowest ``selection`` value (the best valid PER)."""
    checkpoint = Checkpointer(save_folder).find_checkpoint(min_key="selection")
    if checkpoint is None:
        raise FileNotFoundError(
            f"No checkpoint with a valid PER in {save_folder}: has the run "
            "finished at least one epoch?"
        )
    return checkpoint


def best_checkpoint_model_path(save_folder):
    """Path of the best checkpoint's ``model.ckpt`` (a teacher list file line)."""
    return os.path.abspath(
        os.path.join(best_checkpoint(save_folder).path, "model.ckpt")
    )


# --------------------------------------------------------------------------
# One run per folder


class RunLockError(RecipeError):
    """A run folder that another run is writing (or may be writing)."""


class RunLock(SingleWriterLock):
    """The claim of one training run on its output folder (``run.lock``).

    Two runs in one folder would log every epoch twice and delete each
    other's checkpoints, so the second is refused with the first's pid, host
    and command. A lock file left by a run that ended without releasing it
    (kill -9, a crash, a node that went down) is taken over, with a message,
    when its process is known to be gone: it ran on this host and runs no
    more, or it was this SLURM job before a requeue (which keeps the job
    ID). One left by a process of another host cannot be checked from here:
    the message says how to remove it.
    """

    def __init__(self, folder):
        self.folder = os.path.abspath(folder)
        super().__init__(os.path.join(self.folder, RUN_LOCK_FILE))

    # Why a second run is refused, and the ways out that do not lose work.
    WHY = (
        "Two runs in one folder would log every epoch twice and delete each "
        "other's checkpoints"
    )

    def held_error(self, owner):
        return RunLockError(
            f"{self.folder} is in use by another run ({owner}; lock file "
            f"{self.lock_path}). {self.WHY}: wait for that run to finish or stop "
            "it, then run this command again (it resumes from the last "
            "checkpoint), or give this run another --output_folder."
        )

    def check_previous(self, text):
        owner = parse_owner(text)
        if owner is None:
            return  # a new lock file, or one cut off before its text
        if owner.is_this_slurm_job():
            logger.warning(
                "%s: taking the run lock back from the same SLURM job %s, "
                "restarted (requeued); it was held by %s",
                self.folder, owner.slurm_job, owner.text,
            )  # fmt: skip
            return
        if not owner.is_this_host():
            raise RunLockError(
                f"{self.folder} is locked by a run on another host ({owner.text}; "
                f"lock file {self.lock_path}), which cannot be checked from "
                f"{socket.gethostname()}. If that run has ended (stopped, or its "
                f"node went down), remove the lock file (rm {self.lock_path}) and "
                "run this command again. If it still runs, wait for it or give "
                f"this run another --output_folder ({self.WHY.lower()})."
            )
        if owner.still_runs():
            # The flock is free but the process that wrote the file runs the
            # same command: a file system whose locks do not reach here.
            raise RunLockError(
                f"{self.folder} is in use by another run ({owner.text}; lock file "
                f"{self.lock_path}), still running. If that process is not a run "
                f"in this folder, remove the lock file (rm {self.lock_path}) and "
                "run this command again. Otherwise wait for it or give this run "
                f"another --output_folder ({self.WHY.lower()})."
            )
        logger.warning(
            "%s: taking over the run lock of %s: that process has ended without "
            "releasing it (killed, or it crashed)",
            self.folder, owner.text,
        )  # fmt: skip


def lock_run_folder(folder):
    """Takes ``folder``'s RunLock for this run (released when the process
    exits). Under DDP the main process takes it and every rank stops with a
    RunLockError when it is refused (the main process's says why). Returns
    the lock, or None on the other ranks."""
    lock, error = None, None
    if if_main_process():
        # A stage run again in this process (its main called twice) has it.
        same = [
            held
            for held in held_locks()
            if isinstance(held, RunLock) and held.folder == os.path.abspath(folder)
        ]
        try:
            lock = same[0] if same else RunLock(folder).acquire()
        except RunLockError as err:
            error = err
    if is_distributed_initialized():
        nccl = torch.distributed.get_backend() == "nccl"
        device = f"cuda:{torch.cuda.current_device()}" if nccl else "cpu"
        refused = torch.tensor([int(error is not None)], device=device)
        torch.distributed.all_reduce(refused, op=torch.distributed.ReduceOp.MAX)
        if refused.item() and error is None:
            error = RunLockError(
                f"{os.path.abspath(folder)} is in use by another run: the main "
                "process could not lock it (its message says by whom)."
            )
    if error is not None:
        raise error
    return lock
