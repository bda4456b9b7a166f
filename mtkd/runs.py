"""What a run of ``train_teacher.py`` or ``train_kd.py`` leaves in its output
folder, read in one place (``RunFolder``)::

    <run>/hyperparams.yaml              every value the run used (resolved)
    <run>/train_log.txt                 a line per epoch, then the test line
    <run>/per_test.txt                  "PER: x  CTC_PER: y", then per utterance
    <run>/save/model_config.json        CTCAttentionASR kwargs, features, indices
    <run>/save/label_encoder.txt        the labels (their indices are the ids)
    <run>/save/CKPT+.../model.ckpt      the weights (a teacher list file's line)
    <run>/save/CKPT+.../normalize.ckpt  global feature statistics
"""

import json
import os
import re

import ruamel.yaml
from speechbrain.utils.checkpoints import Checkpointer

from mtkd.model import MODEL_CONFIG_FILE

HPARAMS_FILE = "hyperparams.yaml"
TRAIN_LOG_FILE = "train_log.txt"
PER_TEST_FILE = "per_test.txt"
SAVE_FOLDER = "save"
LABEL_ENCODER_FILE = "label_encoder.txt"


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
