"""AtomicCheckpointer: a save killed halfway leaves no checkpoint that loads."""

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from mtkd.checkpoints import AtomicCheckpointer


class Exploding(torch.nn.Linear):
    """A recoverable whose save dies, as a job killed during a save would."""

    armed = False

    def state_dict(self, *args, **kwargs):
        if Exploding.armed:
            raise KeyboardInterrupt("killed during the save")
        return super().state_dict(*args, **kwargs)


def test_killed_save_is_invisible_and_cleaned_up(tmp_path):
    first = torch.nn.Linear(2, 2)
    late = Exploding(2, 2)
    ckpt = AtomicCheckpointer(tmp_path, recoverables={"a": first, "b": late})
    good = ckpt.save_checkpoint(meta={"PER": 50.0})
    assert (good.path / "CKPT.yaml").exists()

    Exploding.armed = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(meta={"PER": 10.0})
    Exploding.armed = False
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2  # the broken save left a folder behind ...
    # ... which no reader (SpeechBrain's own Checkpointer included) sees.
    plain = Checkpointer(tmp_path, recoverables={"a": first, "b": late})
    assert [c.path for c in plain.list_checkpoints()] == [good.path]
    assert ckpt.find_checkpoint(min_key="PER").meta["PER"] == 50.0

    ckpt.save_checkpoint(meta={"PER": 5.0})
    remaining = [p for p in tmp_path.iterdir()]
    assert len(remaining) == 2 and all((p / "CKPT.yaml").exists() for p in remaining)
    assert not list(tmp_path.glob("*/*.pending"))
