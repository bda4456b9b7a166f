#!/usr/bin/env python3
"""Benchmark: bytes of the teacher store vs the original recipe's layout.

    python bench/store_size.py --data_folder /path/to/TIMIT --teachers teachers.txt

Makes the store with ``save_teachers.py`` (default options), then writes the
original recipe's layout on the same data, teachers and batch size, with h5py:
per split, per batch step, per teacher, float32 CTC log-posteriors of every
frame [B, T_max, V] and float32 attention distributions [B, L_max + 1, V], both
padded to the batch, plus the two per-utterance PER rows. Reports bytes per
teacher per hour of audio of both and their ratio (goal: at least 10x).

It also checks that the compact store keeps the distillation targets: for every
teacher and utterance, the greedy CTC hypothesis equals the one
``speechbrain.nnet.losses.ctc_loss_kd`` derives from the full float32
posteriors of the utterance alone (the original layout at batch size 1, where
no padding exists), and the distributions are equal within float16 rounding.
How often the original padded layout gave *other* targets (padding leaking
into the bidirectional encoder and the filterbank) is reported too.

Importable: ``run(data_folder, teachers, ...) -> dict``.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from itertools import groupby

import h5py
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mtkd.store import TeacherStore  # noqa: E402
from mtkd.teachers import load_teachers, read_teacher_list  # noqa: E402

GOAL_RATIO = 10.0
# float16 keeps 11 significant bits: a probability p is within p * 2**-11.
F16_ATOL = 1e-3


def make_store(data_folder, teachers, output_folder, batch_size, device):
    """Runs stage 2 in this process; returns the store folder."""
    import save_teachers

    save_teachers.main(
        [
            os.path.join(REPO, "hparams", "save_teachers.yaml"),
            "--data_folder", data_folder,
            "--tea_models_dir", teachers,
            "--output_folder", output_folder,
            "--batch_size", str(batch_size),
            "--device", device,
            "--noprogressbar",
        ]
    )  # fmt: skip
    return os.path.join(output_folder, "store")


def original_forward(teacher, wavs, wav_lens, tokens_bos, temperature=1.0):
    """A teacher on a padded batch, as the original recipe ran it.

    Returns float32 CTC log-posteriors [B, T_max, V] and attention
    distributions [B, L_max + 1, V] of the padded batch.
    """
    from mtkd.model import make_features

    feats = make_features(**teacher.features)(wavs)
    feats = teacher.normalizer(feats, wav_lens)
    encoded = teacher.model.encode(feats)
    p_ctc = torch.log_softmax(teacher.model.ctc_logits(encoded) / temperature, -1)
    logits = teacher.model.decoder_logits(encoded, wav_lens, tokens_bos)
    return p_ctc, torch.softmax(logits / temperature, -1)


def kd_hypothesis(p_ctc, rel_len, blank_index):
    """The hypothesis ``ctc_loss_kd`` derives from one utterance's row.

    ``p_ctc`` [T_max, V] of a (possibly padded) batch; ``rel_len`` its relative
    length. As ctc_loss_kd: argmax, crop to round(rel_len * T_max), merge
    repeats (filter_ctc_output), drop blanks.
    """
    path = torch.max(p_ctc, dim=-1).indices
    path = path[: int(torch.round(rel_len * p_ctc.shape[0]))].tolist()
    return [k for k, _ in groupby(path) if k != blank_index]


def _batches(hparams_like, split, batch_size):
    """The split's batches, sorted by duration as save_teachers.py does."""
    import speechbrain as sb

    from mtkd.data import add_audio_pipeline, add_text_pipeline

    data = sb.dataio.dataset.DynamicItemDataset.from_json(
        json_path=hparams_like[f"{split}_annotation"],
        replacements={"data_root": hparams_like["data_folder"]},
    ).filtered_sorted(sort_key="duration")
    add_text_pipeline([data], hparams_like["label_encoder"])
    add_audio_pipeline([data])
    sb.dataio.dataset.set_output_keys([data], ["id", "sig", "phn_encoded_bos"])
    return sb.dataio.dataloader.make_dataloader(data, batch_size=batch_size)


def write_original(path, teachers, loaders, temperature=1.0):
    """Writes the original layout with h5py; returns per-utterance targets.

    Layout: ``/<split>/<step>/t<k>/{p_ctc_tea, p_seq_tea, wer_ctc_tea,
    wer_tea}``, float32, padded per batch. Returns {(split, utt_id): [(CTC
    hypothesis as ctc_loss_kd derives it, attention distributions [L+1, V])
    per teacher]}, cut from the batch's padded outputs.
    """
    targets = {}
    with h5py.File(path, "w") as f:
        for split, loader in loaders.items():
            for step, batch in enumerate(loader):
                wavs, wav_lens = batch.sig
                tokens = batch.phn_encoded_bos.data
                for k, teacher in enumerate(teachers):
                    p_ctc, p_seq = original_forward(
                        teacher, wavs, wav_lens, tokens, temperature
                    )
                    g = f.create_group(f"{split}/{step}/t{k}")
                    g["p_ctc_tea"] = p_ctc.numpy().astype(np.float32)
                    g["p_seq_tea"] = p_seq.numpy().astype(np.float32)
                    # The PER rows' values do not change the size: zeros.
                    g["wer_ctc_tea"] = np.zeros((1, len(wavs)), np.float32)
                    g["wer_tea"] = np.zeros((1, len(wavs)), np.float32)
                    _keep_targets(targets, split, batch, teacher, p_ctc, p_seq)
    return targets


def _keep_targets(targets, split, batch, teacher, p_ctc, p_seq):
    """Adds each utterance's targets as a student would derive them."""
    tokens, token_lens = batch.phn_encoded_bos
    n_tokens = torch.round(token_lens * tokens.shape[1]).long()
    for b, utt_id in enumerate(batch.id):
        hyp = kd_hypothesis(
            p_ctc[b], batch.sig.lengths[b], teacher.config["blank_index"]
        )
        att = p_seq[b, : n_tokens[b]]  # bos + L tokens -> L + 1 positions
        targets.setdefault((split, utt_id), []).append((hyp, att))


def compare(store, reference):
    """Counts utterances whose stored targets equal the reference's."""
    hyp_equal, att_err, total = 0, 0.0, 0
    for (split, utt_id), per_teacher in reference.items():
        got = store.get(split, utt_id)
        for k, (hyp, att) in enumerate(per_teacher):
            total += 1
            hyp_equal += got["ctc_hyps"][k].tolist() == hyp
            att_err = max(att_err, float((got["att_dist"][k] - att).abs().max()))
    return {"pairs": total, "hyp_equal": hyp_equal, "att_max_abs_diff": att_err}


def dataset_bytes(files):
    """Bytes on disk of the store's datasets, by name, summed over splits."""
    out = {}

    def add(name, obj):
        if isinstance(obj, h5py.Dataset):
            key = name.rsplit("/", 1)[-1]
            out[key] = out.get(key, 0) + obj.id.get_storage_size()

    for path in files:
        with h5py.File(path, "r") as f:
            f.visititems(add)
    return out


def hours(manifests):
    """Total duration (hours) of the manifests."""
    seconds = 0.0
    for path in manifests:
        with open(path, encoding="utf-8") as f:
            seconds += sum(e["duration"] for e in json.load(f).values())
    return seconds / 3600


@torch.no_grad()
def run(data_folder, teachers, output_folder=None, batch_size=8, device="cpu"):
    """Runs the benchmark; returns a dict of bytes, ratio and target checks."""
    output_folder = output_folder or tempfile.mkdtemp(prefix="store_size_")
    store_folder = make_store(data_folder, teachers, output_folder, batch_size, device)
    store = TeacherStore(store_folder)
    store_bytes = sum(os.path.getsize(p) for p in store.files)
    n = len(read_teacher_list(teachers))
    loaded = load_teachers(teachers, range(n), device="cpu")
    like = {
        f"{s}_annotation": os.path.join(output_folder, f"{s}.json")
        for s in store.splits
    }
    like.update(data_folder=data_folder, label_encoder=loaded[0].label_encoder)
    original_path = os.path.join(output_folder, "original_layout.h5")
    loaders = {s: _batches(like, s, batch_size) for s in store.splits}
    padded = write_original(original_path, loaded, loaders, store.temperature)
    singles = {s: _batches(like, s, 1) for s in store.splits}
    unpadded = write_original(
        os.path.join(output_folder, "original_bs1.h5"),
        loaded,
        singles,
        store.temperature,
    )
    audio_hours = hours(like[f"{s}_annotation"] for s in store.splits)
    original_bytes = os.path.getsize(original_path)
    per_unit = 1.0 / (n * audio_hours)
    exact = compare(store, unpadded)
    result = {
        "teachers": n,
        "hours": audio_hours,
        "batch_size": batch_size,
        "store_bytes": store_bytes,
        "original_bytes": original_bytes,
        "store_bytes_per_teacher_hour": store_bytes * per_unit,
        "original_bytes_per_teacher_hour": original_bytes * per_unit,
        "ratio": original_bytes / store_bytes,
        "store_dataset_bytes": dataset_bytes(store.files),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}",
        "targets_vs_unpadded_original": exact,
        "targets_vs_padded_original": compare(store, padded),
    }
    result["goal_met"] = bool(
        result["ratio"] >= GOAL_RATIO
        and exact["hyp_equal"] == exact["pairs"]
        and exact["att_max_abs_diff"] <= F16_ATOL
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--teachers", required=True, help="teacher list file")
    parser.add_argument("--output_folder", default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    result = run(
        args.data_folder,
        args.teachers,
        args.output_folder,
        args.batch_size,
        args.device,
    )
    print(json.dumps(result, indent=2))
    print(
        f"store {result['store_bytes_per_teacher_hour'] / 1e6:.2f} MB per "
        f"teacher-hour, original {result['original_bytes_per_teacher_hour'] / 1e6:.2f}"
        " MB: "
        f"{result['ratio']:.1f}x smaller (goal {GOAL_RATIO:.0f}x): "
        f"{'met' if result['goal_met'] else 'NOT met'}"
    )
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
