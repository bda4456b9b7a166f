"""The random state training consumes, kept in every checkpoint.

A run resumed from a checkpoint must continue the random stream of the run
that would have gone straight through: the dropout masks, the waveform
augmentation (torch and Python's ``random``: SpeechBrain's ``Augmenter``
draws from both) and anything a user adds that draws from numpy. Without
this, the restart re-seeds the generators (``seed_everything`` in the YAML)
and every batch after it sees other masks, so a resumed run is another
sample, not the same run (docs/cluster.md "Resumed runs").

``RandomState`` is a SpeechBrain recoverable (listed in the checkpointer's
``recoverables`` in hparams/teacher.yaml). It saves the state of torch's CPU
generator, of every visible CUDA device's, of numpy's global generator and
of Python's ``random``; under DDP, every rank's (gathered by
``AtomicCheckpointer.save_checkpoint`` on all ranks, written by the main
process), and each rank restores its own. SpeechBrain's own
``speechbrain.utils.repro.SaveableGenerator`` covers torch's generators only.

Some modules keep random draws of their own between batches: SpeechBrain's
``LiGRU`` layers (the encoder's default cell) draw a pool of 16,000 dropout
masks and walk through it batch by batch, redrawing it when it runs out or
the batch size changes. Their pool (as bits: a mask is 0 or 1/(1-p)), its
position and the batch size it was drawn for are kept too, for the modules
given to ``RandomState(modules=[...])``.

The data order needs nothing here: SpeechBrain's samplers derive it from
their seed and the epoch, and ``mtkd.data.train_loader_kwargs`` gives the
training DataLoader its own generator, so that starting a loader (which
draws a worker seed) mid-epoch on resume does not consume the global stream.
"""

import logging
import random

import numpy
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

logger = logging.getLogger(__name__)


def capture():
    """This process's generator states: {"torch", "cuda" (list), "numpy",
    "python"}."""
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": numpy.random.get_state(),
        "python": random.getstate(),
    }


def restore(state):
    """Sets this process's generators to ``state`` (from ``capture``). CUDA
    states are restored for the devices that exist here, in order."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    numpy.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _mask_pools(modules):
    """{name: module} of the submodules that keep a dropout-mask pool."""
    pools = {}
    for index, module in enumerate(modules):
        for name, sub in module.named_modules():
            if isinstance(getattr(sub, "drop_masks", None), torch.Tensor) and hasattr(
                sub, "drop_mask_cnt"
            ):
                pools[f"{index}.{name}"] = sub
    return pools


def capture_mask_pools(modules):
    """{name: (pool as packed bits, its shape, mask value, position, batch size)}."""
    saved = {}
    for name, sub in _mask_pools(modules).items():
        masks = sub.drop_masks.detach().cpu()
        kept = masks[masks != 0]
        value = float(kept[0]) if len(kept) else 1.0
        bits = numpy.packbits((masks != 0).numpy().reshape(-1))
        saved[name] = (
            bits,
            tuple(masks.shape),
            value,
            sub.drop_mask_cnt,
            sub.batch_size,
        )
    return saved


def restore_mask_pools(modules, saved):
    """Puts back the pools ``capture_mask_pools`` saved (same module names)."""
    for name, sub in _mask_pools(modules).items():
        if name not in saved:
            continue
        bits, shape, value, position, batch_size = saved[name]
        count = int(numpy.prod(shape))
        kept = numpy.unpackbits(bits)[:count].reshape(shape).astype(bool)
        masks = torch.from_numpy(kept).to(sub.drop_masks.dtype) * value
        sub.drop_masks = masks.to(sub.drop_masks.device)
        sub.drop_mask_cnt = position
        sub.batch_size = batch_size


def _rank_and_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@register_checkpoint_hooks
class RandomState:
    """Checkpoint recoverable: every generator's state, per DDP rank.

    ``modules``: the modules whose dropout-mask pools to keep (the model).
    The file (``random_state.ckpt``) holds ``{"ranks": [state of rank 0, 1,
    ...]}``, each as ``capture()`` returns it plus ``"mask_pools"``.
    """

    def __init__(self, modules=()):
        self.modules = list(modules)  # whose mask pools to keep (see above)
        self._gathered = None  # every rank's state, set just before a save

    def _capture(self):
        return {**capture(), "mask_pools": capture_mask_pools(self.modules)}

    def gather(self):
        """Collects every rank's state for the next save (all ranks call it;
        without DDP it is this process's state)."""
        rank, world = _rank_and_world()
        if world == 1:
            self._gathered = [self._capture()]
            return
        states = [None] * world
        torch.distributed.all_gather_object(states, self._capture())
        self._gathered = states

    @mark_as_saver
    def save(self, path):
        states = self._gathered or [self._capture()]
        self._gathered = None
        torch.save({"ranks": states}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        del end_of_epoch  # the same state either way
        states = torch.load(path, map_location="cpu", weights_only=False)["ranks"]
        rank, world = _rank_and_world()
        if len(states) != world:
            # Another number of processes than the run that saved it: the
            # random streams cannot continue as they were; say so.
            logger.warning(
                "%s holds the random state of %d process(es), this run has %d: "
                "the resumed run's random stream (dropout, augmentation) differs "
                "from an uninterrupted run's",
                path,
                len(states),
                world,
            )
        state = states[rank % len(states)]
        restore(state)
        restore_mask_pools(self.modules, state.get("mask_pools", {}))
