"""Running the stages on a cluster: GPU preflight, pre-emption, DDP on CPU.

Pre-emption and time limits (SLURM: ``#SBATCH --signal=B:USR1@120`` and
``--requeue``, see ``slurm/``). ``requeue_on_signal()`` makes SIGUSR1 and
SIGTERM set a flag; the training loop (``ASRBrain.on_fit_batch_end``) looks at
it after every batch, and once it is set saves an intra-epoch checkpoint with
SpeechBrain's own mechanism (through the project's ``AtomicCheckpointer``, so
the save is complete or invisible) and exits with ``REQUEUE_EXIT_CODE``. The
sbatch wrapper turns that into ``scontrol requeue``; the requeued job runs the
same command, which resumes after the last batch trained (SpeechBrain's
saveable DataLoader skips the batches already seen). Under DDP every rank
stops at the same batch: the flag is all-reduced each batch.

``preflight(run_opts)`` stops at once, with the fix, when the installed torch
has no kernels for the GPU found (e.g. V100, sm_70, under the CUDA 13 build
that PyPI installs) or when a precision cannot run on the device.
"""

import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time

import torch
from speechbrain.utils.distributed import (
    if_main_process,
    infer_device,
    is_distributed_initialized,
)

from mtkd import RecipeError

logger = logging.getLogger(__name__)

# EX_TEMPFAIL: "try again later". The sbatch scripts requeue on it.
REQUEUE_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# Set by slurm/common.sh: a file to create when stopping for a requeue (under
# torchrun the job sees torchrun's status, not the ranks' 75).
REQUEUE_FILE_ENV = "MTKD_REQUEUE_FILE"
CUDA_INDEX_URL = "https://download.pytorch.org/whl/cu126"
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------
# Preflight


def run_device(run_opts):
    """The device a stage runs on: ``--device``, else SpeechBrain's guess."""
    return run_opts["device"] or infer_device()


def preflight(run_opts):
    """Checks device, launch options and precision before any work; returns
    the device string.

    Raises ``RecipeError`` (``ERROR: ...``, exit status 2) for a device string
    torch does not know, a CUDA device that torch cannot use (not available,
    or no kernels for its architecture), fp16 on CPU, and SpeechBrain launch
    options that cannot work here (``check_launch_options``).
    """
    device = check_device(run_device(run_opts))
    check_launch_options(run_opts, device)
    check_precision(run_opts, device)
    return device


def check_device(device):
    """``device`` if this machine can run on it (``cpu``, ``cuda``,
    ``cuda:N``), else a RecipeError with what to give instead."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise RecipeError(
            f"--device {device!r} is not a device this recipe runs on: use cpu, "
            "cuda or cuda:N (N: the GPU's index)."
        )
    if kind == "cuda":
        check_cuda_kernels(device)
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise RecipeError(
                f"--device {device}: there are {torch.cuda.device_count()} GPU(s) "
                f"visible (cuda:0 to cuda:{torch.cuda.device_count() - 1})."
            )
    return device


def _option(run_opts, key, default=None):
    """One run option (SpeechBrain's RunOptions, or a plain dict)."""
    try:
        return run_opts[key]
    except (KeyError, AttributeError):
        return default


def check_launch_options(run_opts, device):
    """SpeechBrain run options that would fail later, deep inside: say so now."""
    if _option(run_opts, "jit") or _option(run_opts, "jit_module_keys"):
        raise RecipeError(
            "--jit / --jit_module_keys: this recipe's model cannot be compiled "
            "with TorchScript (SpeechBrain's LiGRU and attentional decoder are "
            "not scriptable). Leave the option out."
        )
    if _option(run_opts, "compile") and not device.startswith("cuda"):
        raise RecipeError(
            f"--compile on {device}: torch.compile compiles this recipe's model "
            "again for new batch shapes, which on the CPU costs far more than it "
            "saves (measured: a tiny model's first epoch took 22 minutes, not 5 "
            "seconds). Leave --compile out on the CPU; it is meant for GPUs."
        )
    if _option(run_opts, "data_parallel_backend") and not device.startswith("cuda"):
        raise RecipeError(
            "--data_parallel_backend needs CUDA GPUs; this run is on "
            f"{device}. For several processes use torchrun (docs/cluster.md)."
        )
    if int(_option(run_opts, "grad_accumulation_factor", 1)) < 1:
        raise RecipeError(
            "--grad_accumulation_factor must be 1 or more (batches per optimiser "
            f"step), got {run_opts['grad_accumulation_factor']}."
        )
    launched = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    backend = _option(run_opts, "distributed_backend", "nccl")
    if launched and not device.startswith("cuda") and backend == "nccl":
        raise RecipeError(
            "This run has several processes (torchrun) on the CPU, where the "
            "nccl backend (SpeechBrain's default) cannot run: add "
            "--distributed_backend gloo."
        )


def check_precision(run_opts, device):
    """fp16 autocast needs a GPU (bf16 and fp32 run anywhere)."""
    asked = {run_opts["precision"], run_opts["eval_precision"]}
    if "fp16" in asked and not device.startswith("cuda"):
        raise RecipeError(
            f"--precision/--eval_precision fp16 needs a CUDA GPU; this run is on "
            f"{device}. Use --precision bf16 (slow on most CPUs) or fp32 there."
        )


def _arch_number(arch):
    """'sm_86' -> 86, 'compute_90a' -> 90."""
    return int(arch.split("_", 1)[1].rstrip("af"))


def kernels_fit(capability, arch_list):
    """Whether a build for ``arch_list`` runs on a GPU of ``capability``.

    Binary kernels (sm_XY) run on GPUs of the same major version and an equal
    or higher minor one; PTX (compute_XY) is compiled for any newer GPU.
    """
    major, minor = capability
    device = 10 * major + minor
    for arch in arch_list:
        code = _arch_number(arch)
        if arch.startswith("sm_") and code // 10 == major and code <= device:
            return True
        if arch.startswith("compute_") and code <= device:
            return True
    return False


def check_cuda_kernels(device="cuda"):
    """Stops with the fix if torch cannot run on the GPU ``device``."""
    if not torch.cuda.is_available():
        raise RecipeError(
            f"--device {device} but torch.cuda.is_available() is False (no GPU "
            f"visible, or a CPU-only torch {torch.__version__}). Check "
            "CUDA_VISIBLE_DEVICES / the job's GPU request, or use --device cpu."
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    capability = torch.cuda.get_device_capability(index)
    arch_list = torch.cuda.get_arch_list()
    if kernels_fit(capability, arch_list):
        return
    version = torch.__version__.split("+")[0]
    sm = f"sm_{capability[0]}{capability[1]}"
    raise RecipeError(
        f"The GPU {torch.cuda.get_device_name(index)} ({sm}) has no kernels in "
        f"the installed torch {torch.__version__} (CUDA {torch.version.cuda}, "
        f"built for {' '.join(arch_list) or 'no GPU'}). Install the CUDA 12.6 "
        f"wheels: pip install torch=={version} torchaudio=={version} "
        f"--index-url {CUDA_INDEX_URL}"
    )


def autocast(device, precision):
    """``torch.autocast`` for inference at ``precision`` (fp32: a no-op).

    Used by save_teachers.py, which runs teachers outside a Brain; the
    stored targets are float32 softmaxes, stored as float16 either way.
    """
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=AUTOCAST_DTYPES[precision])


# --------------------------------------------------------------------------
# Pre-emption: checkpoint at the next batch boundary, exit for requeue


class _StopFlag:
    """Which stop signal this process received (None: none yet)."""

    signum = None

    def handler(self, signum, frame):
        # Only a flag here: the training loop decides where it is safe to stop.
        self.signum = signum


STOP = _StopFlag()


class _Interrupt:
    """Ctrl-C (SIGINT): KeyboardInterrupt at once, and a flag that stops the
    run at the next safe point if that exception is lost.

    Python runs a signal's handler between two bytecodes of the main thread,
    which may be inside a finaliser (``__del__`` of an HDF5 or torch object);
    an exception raised there can only be printed, and the run would go on
    as if Ctrl-C had not been pressed. ``raise_if_interrupted`` at batch
    boundaries (and when the stage returns) raises it again.
    """

    signum = None

    def handler(self, signum, frame):
        self.signum = signum
        raise KeyboardInterrupt

    def install(self):
        """Takes SIGINT (main thread only; elsewhere Python's own stays)."""
        try:
            signal.signal(signal.SIGINT, self.handler)
        except ValueError:  # not the main thread
            pass


INTERRUPT = _Interrupt()


def raise_if_interrupted():
    """KeyboardInterrupt if Ctrl-C was pressed (see ``_Interrupt``)."""
    if INTERRUPT.signum is not None:
        raise KeyboardInterrupt


def requeue_on_signal(signals=STOP_SIGNALS):
    """SIGUSR1/SIGTERM: checkpoint at the next batch, exit REQUEUE_EXIT_CODE."""
    for sig in signals:
        signal.signal(sig, STOP.handler)


def exit_for_requeue():
    """Ends the process with REQUEUE_EXIT_CODE (and tells the sbatch wrapper)."""
    path = os.environ.get(REQUEUE_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
    raise SystemExit(REQUEUE_EXIT_CODE)


def _leave_signals_to_main_process(worker_id, main_pid, then=None):
    """A DataLoader worker's first act: leave the stop signals and Ctrl-C to
    the main process.

    SLURM (and a terminal's Ctrl-C) signals the whole process group. torch's
    workers die of a SIGTERM sent by anyone but their parent, and the main
    process then fails with "DataLoader worker ... is killed by signal:
    Terminated" before it can checkpoint. So a worker ignores SIGINT and
    SIGUSR1, and takes SIGTERM from its parent only (``_sigterm_from_parent``):
    the main process ends its workers with it when it leaves (multiprocessing
    at exit, torch's shutdown), and a worker that ignored it would hang the
    main process's exit. A worker still ends with its main process, even
    one killed with SIGKILL (torch's watchdog). ``main_pid``: the process
    that made the loader (the parent, unless a forkserver started the worker).
    """
    for sig in (signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    _sigterm_from_parent({main_pid, os.getppid()})
    if then is not None:
        then(worker_id)


def _sigterm_from_parent(parents):
    """Ends this process at a SIGTERM from one of the pids ``parents``, as
    torch's own worker handler does for its parent's (exit status 0); a
    SIGTERM from anyone else is dropped.

    Python's signal handlers are not told the sender, so SIGTERM is blocked
    and a thread takes it with ``sigwaitinfo``, which is.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait():
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid in parents:
                os._exit(0)

    # Started after the mask is set: the thread inherits it.
    threading.Thread(target=wait, name="sigterm-from-parent", daemon=True).start()


def loader_kwargs_for_signals(loader_kwargs):
    """``loader_kwargs`` (DataLoader options) with a ``worker_init_fn`` that
    leaves stop signals to the main process, chained before any given one.
    Nothing changes without workers."""
    if not loader_kwargs.get("num_workers"):
        return loader_kwargs
    given = loader_kwargs.get("worker_init_fn")
    init = functools.partial(
        _leave_signals_to_main_process, main_pid=os.getpid(), then=given
    )
    return {**loader_kwargs, "worker_init_fn": init}


def exit_on_signal(signals=STOP_SIGNALS):
    """SIGUSR1/SIGTERM: exit REQUEUE_EXIT_CODE at once (no mid-run state).

    For save_teachers.py: the part being written is dropped (the exception
    unwinds through its writer) and written again by the requeued job.
    """

    def handler(signum, frame):
        name = signal.Signals(signum).name
        logger.warning("%s received: stopping; the job is to be requeued", name)
        exit_for_requeue()

    for sig in signals:
        signal.signal(sig, handler)


def stop_requested(device="cpu"):
    """Whether any process of the run got a stop signal (a collective in DDP:
    every rank must call it at the same point)."""
    flag = STOP.signum is not None
    if not is_distributed_initialized():
        return flag
    dev = device if torch.distributed.get_backend() == "nccl" else "cpu"
    votes = torch.tensor([int(flag)], device=dev)
    torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
    return bool(votes.item())


def _stop_message():
    name = signal.Signals(STOP.signum).name if STOP.signum else "another rank"
    return f"stop signal ({name})"


def checkpoint_and_exit_if_stopping(brain, loss, should_step):
    """Called after every training batch (all ranks): on a stop signal, saves
    an intra-epoch checkpoint and exits with REQUEUE_EXIT_CODE."""
    raise_if_interrupted()
    if not stop_requested(brain.device) or not should_step:
        return
    # Brain.fit would add this batch's loss after the hook: do it now so the
    # checkpoint's running average counts it, as the data position does.
    brain.avg_train_loss = brain.update_average(loss.detach(), brain.avg_train_loss)
    brain._save_intra_epoch_ckpt()  # SpeechBrain's own intra-epoch checkpoint
    if if_main_process():
        logger.warning(
            "%s: saved an intra-epoch checkpoint at epoch %d after batch %d; "
            "exiting with status %d (requeue; the same command resumes here)",
            _stop_message(),
            brain.hparams.epoch_counter.current,
            brain.step,
            REQUEUE_EXIT_CODE,
        )
    exit_for_requeue()


def exit_if_stopping(brain):
    """Before a long evaluation: exit for requeue if a stop was asked for
    (the last end-of-epoch checkpoint holds everything)."""
    if stop_requested(brain.device):
        if if_main_process():
            logger.warning(
                "%s before testing: exiting with status %d (requeue)",
                _stop_message(),
                REQUEUE_EXIT_CODE,
            )
        exit_for_requeue()


def log_resume(brain):
    """Says where a run resumed from an intra-epoch checkpoint (after recovery)."""
    if brain.step > 0 and if_main_process():
        logger.info(
            "Resuming epoch %d after batch %d (intra-epoch checkpoint)",
            brain.hparams.epoch_counter.current + 1,
            brain.step,
        )


# --------------------------------------------------------------------------
# DDP


def tell_torchrun(message):
    """Under torchrun, hands this rank's error message to torchrun (the error
    file it names in $TORCHELASTIC_ERROR_FILE). torchrun always ends a failed
    job with its own traceback and failure summary, which pushed the rank's
    one-line ERROR out of sight; with the file, the summary's last lines
    repeat that message in place of "To enable traceback see: ...". Without
    torchrun, nothing."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    text = f"ERROR: {message}"
    # The layout torch.distributed.elastic writes for a Python exception.
    record = {
        "message": {
            "message": text,
            "extraInfo": {"py_callstack": text, "timestamp": str(int(time.time()))},
        }
    }
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
    except OSError:
        pass  # torchrun's summary is then its usual one


def wrap_ddp_without_sync_batchnorm(brain):
    """DDP-wraps the trainable modules as SpeechBrain does, minus SyncBatchNorm.

    SpeechBrain 1.1.2 converts BatchNorm to SyncBatchNorm, which runs on GPUs
    only; on CPU (gloo) each rank keeps plain BatchNorm, and DDP broadcasts
    rank 0's statistics at each forward.
    """
    ddp = torch.nn.parallel.DistributedDataParallel
    for name, module in brain.modules.items():
        if any(p.requires_grad for p in module.parameters()):
            brain.modules[name] = ddp(
                module,
                device_ids=None,
                find_unused_parameters=brain.find_unused_parameters,
            )
