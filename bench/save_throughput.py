#!/usr/bin/env python3
"""Benchmark: throughput of ``save_teachers.py`` and where its time goes.

    python bench/save_throughput.py --data_folder D --teachers teachers.txt

Runs stage 2 (``save_teachers.main``, default options, in this process) over
train, valid and test ``--repeats`` times, each into a fresh output folder (a
complete store would otherwise be skipped), and reports per run and as medians:

- **throughput**: audio seconds processed per wall second per teacher,
  ``A * N / W`` for A seconds of audio (the three splits), N teachers and W
  the wall time of the whole ``save_teachers.main`` call (manifests, loading
  the teachers, running them, writing the store, the summary). It is the
  inverse of one teacher's real-time factor: it does not change with N when
  the cost is all in the teachers;
- **share not in teacher forward passes**: 1 - F / W, F the time inside the
  teachers' forward computation: the filterbanks of each unpadded waveform
  (``mtkd.teachers.unpadded_features``), normalisation + encoder
  (``encode_unpadded``), the CTC head (``CTCAttentionASR.ctc_logits``) and the
  teacher-forced decoder (``teacher_forced_distributions``). The rest is data
  loading, greedy decoding and per-utterance PERs (``utterance_pers``), writing
  the store (``PartWriter.append``), preparing manifests, loading teachers and
  the summary; the same share within ``write_part`` alone (the loop over the
  batches) is reported too.

The timings come from wrapping those functions in this process (restored
afterwards); nothing of the library changes. With ``--device cuda`` each timed
call synchronises the GPU before it returns so the time is the GPU's work.
``--threads`` sets ``torch.set_num_threads`` (default 1, as the other
benchmarks and the tests).

Importable: ``run(data_folder, teachers, ...) -> dict``.
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import mtkd.store.writer  # noqa: E402
import mtkd.teachers  # noqa: E402
from mtkd.model import CTCAttentionASR  # noqa: E402
from mtkd.teachers import read_teacher_list  # noqa: E402

SPLITS = ("train", "valid", "test")

# The teachers' forward computation: (owner, attribute) of what is timed.
FORWARD_PARTS = {
    "features": (mtkd.teachers, "unpadded_features"),
    "encoder": (mtkd.teachers, "encode_unpadded"),
    "ctc_head": (CTCAttentionASR, "ctc_logits"),
    "decoder": (mtkd.teachers, "teacher_forced_distributions"),
}
# Timed as well, to say where the rest goes.
OTHER_PARTS = {
    "teacher_targets": (mtkd.store.writer, "teacher_targets"),
    "per": (mtkd.teachers, "utterance_pers"),
    "store_write": (mtkd.store.writer.PartWriter, "append"),
}


class CallTimer:
    """Sums the wall time of calls to wrapped functions, by name."""

    def __init__(self, device="cpu"):
        self.totals = {}
        self.calls = {}
        self.sync = str(device).startswith("cuda") and torch.cuda.is_available()

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.sync:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                self.totals[name] = self.totals.get(name, 0.0) + elapsed
                self.calls[name] = self.calls.get(name, 0) + 1

        timed.__wrapped__ = fn
        return timed

    @contextlib.contextmanager
    def patched(self, parts):
        """Wraps ``{name: (owner, attribute)}`` for the block, then restores."""
        saved = []
        try:
            for name, (owner, attr) in parts.items():
                original = owner.__dict__[attr] if isinstance(owner, type) else None
                fn = getattr(owner, attr)
                saved.append((owner, attr, original, fn))
                setattr(owner, attr, self.wrap(name, fn))
            yield self
        finally:
            for owner, attr, original, fn in reversed(saved):
                setattr(owner, attr, original if original is not None else fn)


def audio_seconds(folder):
    """Seconds of audio and utterances in the run's manifests."""
    seconds, count = 0.0, 0
    for split in SPLITS:
        with open(os.path.join(folder, f"{split}.json"), encoding="utf-8") as f:
            entries = json.load(f).values()
        seconds += sum(e["duration"] for e in entries)
        count += len(entries)
    return seconds, count


def save_once(data_folder, teachers, output_folder, batch_size, device):
    """One save_teachers run, timed; returns (wall s, {part: s}, {part: calls})."""
    import save_teachers

    timer = CallTimer(device)
    parts = dict(FORWARD_PARTS, **OTHER_PARTS)
    parts["write_part"] = (mtkd.store.writer, "write_part")
    argv = [
        os.path.join(REPO, "hparams", "save_teachers.yaml"),
        "--data_folder", data_folder,
        "--tea_models_dir", teachers,
        "--output_folder", output_folder,
        "--batch_size", str(batch_size),
        "--device", device,
        "--noprogressbar",
    ]  # fmt: skip
    with timer.patched(parts):
        start = time.perf_counter()
        save_teachers.main(argv)
        wall = time.perf_counter() - start
    return wall, timer.totals, timer.calls


def summarise_run(wall, totals, audio_s, n_teachers):
    forward = sum(totals.get(k, 0.0) for k in FORWARD_PARTS)
    write_part = totals.get("write_part")
    out = {
        "wall_s": wall,
        "forward_s": forward,
        "parts_s": dict(totals),
        "throughput": audio_s * n_teachers / wall,
        "share_not_forward": 1.0 - forward / wall,
        "share_not_forward_in_write_part": (
            1.0 - forward / write_part if write_part else None
        ),
        "write_part_throughput": (
            audio_s * n_teachers / write_part if write_part else None
        ),
    }
    out["other_s"] = {
        "outside_write_part": wall - write_part if write_part else None,
        "per": totals.get("per", 0.0),
        "store_write": totals.get("store_write", 0.0),
        # teacher_targets less the forward parts and the PERs: greedy decoding,
        # log-softmax, cropping, copying.
        "targets_other": totals.get("teacher_targets", 0.0)
        - forward
        - totals.get("per", 0.0),
        # write_part less teacher_targets and writing: the DataLoader.
        "loading_other": (
            write_part - totals.get("teacher_targets", 0.0) - totals["store_write"]
            if write_part and "store_write" in totals
            else None
        ),
    }
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run(
    data_folder,
    teachers,
    repeats=3,
    batch_size=8,
    device="cpu",
    threads=1,
    workdir=None,
):
    """Runs the benchmark; returns a JSON-able dict (runs and medians)."""
    if threads:
        torch.set_num_threads(threads)
    n_teachers = len(read_teacher_list(teachers))
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="save_throughput_")
    runs = []
    started = time.perf_counter()
    try:
        for r in range(repeats):
            out = os.path.join(workdir, f"run{r}")
            shutil.rmtree(out, ignore_errors=True)
            wall, totals, calls = save_once(
                data_folder, teachers, out, batch_size, device
            )
            audio_s, n_utt = audio_seconds(out)
            runs.append(summarise_run(wall, totals, audio_s, n_teachers))
            runs[-1]["calls"] = calls
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    keys = (
        "wall_s",
        "forward_s",
        "throughput",
        "share_not_forward",
        "share_not_forward_in_write_part",
        "write_part_throughput",
    )
    medians = {k: _median([r[k] for r in runs]) for k in keys}
    part_names = sorted({k for r in runs for k in r["parts_s"]})
    medians["parts_s"] = {
        k: _median([r["parts_s"].get(k) for r in runs]) for k in part_names
    }
    medians["other_s"] = {
        k: _median([r["other_s"][k] for r in runs]) for k in runs[0]["other_s"]
    }
    return {
        "benchmark": "save_throughput",
        "teachers": n_teachers,
        "audio_seconds": audio_s,
        "utterances": n_utt,
        "batch_size": batch_size,
        "device": device,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "runs": runs,
        "median": medians,
        "seconds": time.perf_counter() - started,
    }


def markdown(result):
    m = result["median"]
    p = m["parts_s"]
    lines = [
        f"save_teachers over {result['utterances']} utterances "
        f"({result['audio_seconds'] / 3600:.3f} h), {result['teachers']} teachers, "
        f"batch {result['batch_size']}, {result['device']}, "
        f"{result['threads']} thread(s); median of {result['repeats']} runs",
        "",
        "| figure | median | runs |",
        "|---|---:|---|",
    ]

    def row(name, key, fmt):
        runs = " ".join(
            fmt.format(r[key]) for r in result["runs"] if r[key] is not None
        )
        value = "-" if m[key] is None else fmt.format(m[key])
        lines.append(f"| {name} | {value} | {runs} |")

    row("wall s", "wall_s", "{:.1f}")
    row("audio s per s per teacher", "throughput", "{:.1f}")
    row("same, write_part only", "write_part_throughput", "{:.1f}")
    row("share not in teacher forward", "share_not_forward", "{:.3f}")
    row("same, within write_part", "share_not_forward_in_write_part", "{:.3f}")
    parts = ", ".join(f"{k} {v:.2f}" for k, v in p.items() if v is not None)
    lines += ["", f"Median seconds by part: {parts}"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--teachers", required=True, help="teacher list file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(
        args.data_folder,
        args.teachers,
        repeats=args.repeats,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        workdir=args.workdir,
    )
    print(markdown(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
