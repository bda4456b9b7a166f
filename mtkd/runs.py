"""What a finished (or interrupted) run left in its output folder."""

import os

from speechbrain.utils.checkpoints import Checkpointer


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
