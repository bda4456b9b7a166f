"""A SpeechBrain Checkpointer whose checkpoints are complete or invisible.

SpeechBrain 1.1.2 writes a checkpoint's ``CKPT.yaml`` *first* and the parameter
files after it. A job killed in between (pre-emption, a time limit, SIGKILL)
leaves a folder that looks like a checkpoint but lacks files or holds a
truncated one, and the resumed run then fails to load it. Here ``CKPT.yaml`` is
written last, by renaming, once every parameter file is on disk; SpeechBrain
ignores a ``CKPT+`` folder without ``CKPT.yaml``, and such leftovers are removed
when the next checkpoint is saved.
"""

import os
import shutil

from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from mtkd.disk import disk_full_error, is_disk_full
from mtkd.repro import RandomState

PENDING_SUFFIX = ".pending"


class AtomicCheckpointer(Checkpointer):
    """Drop-in replacement for ``speechbrain.utils.checkpoints.Checkpointer``."""

    def add_recoverables(self, recoverables):
        super().add_recoverables(recoverables)
        for name, obj in self.recoverables.items():
            # Checkpoints from before the random state was kept lack its file.
            self.optional_recoverables.setdefault(name, isinstance(obj, RandomState))

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        # Called by save_checkpoint before the parameter files are written.
        pending = fpath.with_name(fpath.name + PENDING_SUFFIX)
        return super()._save_checkpoint_metafile(
            pending, meta_to_include or {}, end_of_epoch
        )

    def save_checkpoint(self, *args, **kwargs):
        """Saves as SpeechBrain does, then publishes ``CKPT.yaml`` atomically."""
        if if_main_process():
            self.remove_incomplete()
        for obj in self.recoverables.values():
            if isinstance(obj, RandomState):
                obj.gather()  # a collective under DDP: every rank is here
        try:
            checkpoint = super().save_checkpoint(*args, **kwargs)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err, self.checkpoints_dir):
                raise
            # torch says "unexpected pos" and no more: say it plainly, and
            # free the space the unfinished checkpoint took.
            self.remove_incomplete()
            raise disk_full_error(
                self.checkpoints_dir / "CKPT+...", "a checkpoint in"
            ) from None
        if checkpoint is not None:
            meta = checkpoint.path / METAFNAME
            os.replace(meta.with_name(METAFNAME + PENDING_SUFFIX), meta)
        # DDP: the other ranks list checkpoints next (save_and_keep_only); they
        # must see this one published, or they delete (collectively) another set.
        ddp_barrier()
        return checkpoint

    def remove_incomplete(self):
        """Deletes ``CKPT+*`` folders a killed save left without ``CKPT.yaml``."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.name.startswith(CKPT_PREFIX) and not (path / METAFNAME).exists():
                shutil.rmtree(path, ignore_errors=True)
