#!/usr/bin/env python3
"""Benchmark: time of a KD training step over the plain supervised step.

    python bench/kd_step.py                  # full run, N = 1, 10, 100 teachers
    python bench/kd_step.py --quick          # smoke test (N = 1, 10), < 1 minute
    python bench/kd_step.py --threads 2 --json /tmp/kd_step.json
    python bench/kd_step.py --device cuda --teachers 10   # on a GPU

Goal of the project: a KD step costs at most 1.05x the supervised step with
N = 10 teachers and at most 1.5x with N = 100 (CPU-sized student, batch of 8).

What runs is the training code itself. A CPU-sized student (the demo's sizes,
``--cnn_blocks`` ... ``--attn_dim``) is built from ``hparams/train_kd.yaml``
by ``mtkd.hparams.load_hparams``; one ``ASRBrain`` and one ``KDBrain`` share its
modules (each has its own Adam) and ``fit_batch`` is called directly, as
``Brain.fit`` does: forward (augmentation, filterbank, normalisation,
CRDNN, CTC head, teacher-forced decoder), supervised CTC + NLL, for KD also
the strategy weights, ``ctc_kd_loss`` and ``seq_kd_loss``, backward, gradient
clipping and the optimizer step.

Data: a synthetic corpus (white-noise WAV files of 2-4 s at 16 kHz and 25-45
phones of the 39-phone set: the cost does not depend on the content) read by
the recipe's pipelines (``mtkd.data``); batches of 8 utterances of similar
length, as the default ``sorting: ascending`` gives. Teacher targets are
written as a real store with the project's ``PartWriter`` (gzip, float16, the
``save_teachers.yaml`` defaults), checked by ``check_store_matches`` and read
through ``add_teacher_pipeline`` (``TeacherStore.get``) and ``KDBatch``, so
``batch.teacher`` is what training gets from its DataLoader. Each teacher has
a CTC and an attention PER drawn in [10, 40] %; on each utterance its greedy
hypothesis is the reference with round(r * L / 100) random edits
(substitutions, deletions, insertions), r its per-utterance PER in [5, 40];
its distributions are peaked softmaxes on the reference (eos at the end).
Two kinds of hypotheses:

- ``disagree``: every teacher has its own edits (N distinct CTC targets per
  utterance, nothing for ``ctc_kd_loss`` to merge);
- ``agree``: teachers come in groups of ``--agree-group`` (4) that output the
  same hypothesis (e.g. runs of one recipe), ceil(N / 4) distinct targets.

Timing: every configuration (N, hypotheses, strategy) runs ``--steps`` KD
steps per round, each paired with a supervised step on the same batch and the
same random seed (augmentation, dropout), the pair's order alternating;
``--rounds`` rounds visit the configurations in rotated order, after
``--warmup`` steps of each. The ratio of a configuration is the median over
its pairs of KD time / supervised time: the batches differ in length (and so
in cost) and the load of a shared machine drifts, and a pair shares both. The
same ratio from this process's CPU time is reported too, and an estimate from
the KD parts timed alone. On a shared 2-vCPU machine identical steps vary by
~10 % (other processes slow this one's CPU time as well, so the CPU-time ratio
is no cleaner): differences of a few percent need all the pairs. Then, outside
the steps, the KD parts are timed alone on the batch's real student outputs
(forward + backward: strategy weights and their logging, ``ctc_kd_loss`` and
within it ``merge_ctc_targets``, ``seq_kd_loss``) with the number of CTC
targets M the merge leaves, and the per-batch cost of reading
(``TeacherStore.get`` x B) and collating (``collate_teacher_targets``) the
targets, which DataLoader workers pay in training, not the step.

Threads: ``--threads`` (default 1) sets ``torch.set_num_threads``. On a shared
2-core machine two intra-op threads help only while the other core is idle
(then the step and the KD parts both got ~1.6x faster, the ratio stayed) and
make the timings erratic when it is not: one thread is the stable setting.

Device: ``--device`` (default cpu; ``cuda`` or ``cuda:N`` on a GPU, where the
step times include waiting for the GPU: ``fit_batch`` returns the loss on the
CPU, and the KD parts timed alone synchronise before reading the clock).

Output: a markdown table on stdout and a JSON file (``--json``, default
``bench/kd_step.json``). Importable: ``run(**options) -> dict`` (options as
``DEFAULTS``; ``quick=True`` applies ``QUICK``).
"""

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import wave

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import speechbrain as sb  # noqa: E402
from speechbrain.dataio.batch import PaddedBatch  # noqa: E402

from mtkd.brain import ASRBrain  # noqa: E402
from mtkd.data import (  # noqa: E402
    BASE_OUTPUT_KEYS,
    add_audio_pipeline,
    add_text_pipeline,
    build_label_encoder,
)
from mtkd.distill import (  # noqa: E402
    TEACHER_KEY,
    KDBatch,
    KDBrain,
    add_teacher_pipeline,
    check_store_matches,
)
from mtkd.hparams import load_hparams  # noqa: E402
from mtkd.store import TeacherStore, collate_teacher_targets  # noqa: E402
from mtkd.store.format import (  # noqa: E402
    StoreOptions,
    manifest_info,
    part_file_name,
    part_meta,
    store_settings,
)
from mtkd.store.writer import PartWriter  # noqa: E402
from mtkd.strategies import (  # noqa: E402
    STRATEGIES,
    ctc_kd_loss,
    merge_ctc_targets,
    seq_kd_loss,
    strategy_weights,
    weight_stats,
)
from mtkd.teachers import UttTargets  # noqa: E402
from timit_prepare import PHONE_SETS  # noqa: E402

HPARAMS_FILE = os.path.join(REPO, "hparams", "train_kd.yaml")
DEFAULT_JSON = os.path.join(REPO, "bench", "kd_step.json")
# Goal: KD step / supervised step at most this, by number of teachers.
GOALS = {10: 1.05, 100: 1.5}
# What the original recipe measured at N = 10 on this kind of machine.
ORIGINAL_RATIO_N10 = "1.10-1.13"
SAMPLE_RATE = 16000
VARIANTS = ("disagree", "agree")
SPLIT = "train"

# The demo's CPU-sized student (README "CPU-sized runs", 2 CNN blocks).
STUDENT_SIZES = {
    "cnn_blocks": 2,
    "cnn_channels": [16, 32],
    "rnn_layers": 2,
    "rnn_neurons": 128,
    "dnn_blocks": 1,
    "dnn_neurons": 128,
    "emb_size": 32,
    "dec_neurons": 128,
    "attn_dim": 128,
}

DEFAULTS = {
    "teachers": (1, 10, 100),
    "strategies": STRATEGIES,
    "variants": VARIANTS,
    "batch_size": 8,
    "n_batches": 4,  # distinct batches, visited in turn
    "steps": 8,  # timed KD steps (each with its supervised twin) per round
    "rounds": 3,
    "warmup": 2,
    "component_repeats": 7,
    "threads": 1,
    "seed": 0,
    "min_seconds": 2.0,
    "max_seconds": 4.0,
    "min_phones": 25,
    "max_phones": 45,
    "teacher_per": (10.0, 40.0),  # each teacher's mean PER, uniform in
    "utt_per": (5.0, 40.0),  # per-utterance PERs are clipped to
    "agree_group": 4,
    "compression": "gzip",  # save_teachers.yaml's store_compression
    "augment": True,  # the recipe's default for the student
    "json_path": DEFAULT_JSON,
    "workdir": None,  # default: a temporary folder, removed at the end
    "quiet": False,
    "device": "cpu",  # or cuda, cuda:N
    **STUDENT_SIZES,
}
QUICK = {
    "teachers": (1, 10),
    "variants": ("disagree",),
    "steps": 2,
    "rounds": 1,
    "warmup": 1,
    "n_batches": 2,
    "component_repeats": 2,
}


def log(options, *args):
    if not options["quiet"]:
        print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Synthetic corpus and teachers


def write_wav(path, n_samples, rng):
    """White noise at about -30 dBFS, 16-bit mono."""
    samples = (rng.standard_normal(n_samples) * 1000).clip(-32767, 32767)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def make_corpus(folder, options, rng):
    """Writes WAV files; returns the manifest dict and the batches' utt IDs.

    Longer utterances get more phones (TIMIT speaks ~12 phones/s). Batches:
    ``n_batches`` groups of ``batch_size`` utterances of similar duration.
    """
    n_utt = options["batch_size"] * options["n_batches"]
    phones = PHONE_SETS[39]
    lo, hi = options["min_seconds"], options["max_seconds"]
    p_lo, p_hi = options["min_phones"], options["max_phones"]
    manifest = {}
    for u in range(n_utt):
        seconds = lo + (hi - lo) * rng.random()
        share = (seconds - lo) / max(hi - lo, 1e-9)
        n_phones = int(round(p_lo + (p_hi - p_lo) * share + rng.normal(0, 2)))
        n_phones = min(max(n_phones, p_lo), p_hi)
        utt_id = f"SPK{u // 10:03d}_SX{u:04d}"
        wav = os.path.join(folder, f"{utt_id}.wav")
        write_wav(wav, int(seconds * SAMPLE_RATE), rng)
        manifest[utt_id] = {
            "wav": wav,
            "duration": seconds,
            "spk_id": utt_id.split("_")[0],
            "phn": " ".join(rng.choice(phones, n_phones)),
            "wrd": "",
        }
    order = sorted(manifest, key=lambda u: manifest[u]["duration"])
    size = options["batch_size"]
    batches = [order[i : i + size] for i in range(0, n_utt, size)]
    return manifest, batches


def noisy_copy(ref, n_edits, phone_ids, rng):
    """The reference with ``n_edits`` random substitutions/deletions/insertions."""
    hyp = list(ref)
    for _ in range(n_edits):
        op = rng.random()
        if op < 0.5 and hyp:
            i = rng.integers(len(hyp))
            hyp[i] = rng.choice([p for p in phone_ids if p != hyp[i]])
        elif op < 0.75 and hyp:
            del hyp[rng.integers(len(hyp))]
        else:
            hyp.insert(rng.integers(len(hyp) + 1), rng.choice(phone_ids))
    return hyp


def peaked_distributions(targets, n_labels, rng):
    """[L+1, V] teacher-forced softmaxes, ~0.85 on the reference (then eos)."""
    logits = rng.standard_normal((len(targets), n_labels))
    logits[np.arange(len(targets)), targets] += 6.0
    return torch.softmax(torch.from_numpy(logits).float(), dim=-1)


def per_utterance_edits(mean_per, n_ref, options, rng):
    """(edits, PER %) of one teacher on one utterance, PER within utt_per."""
    lo, hi = options["utt_per"]
    rate = float(np.clip(mean_per + rng.normal(0.0, 5.0), lo, hi))
    edits = max(int(round(rate * n_ref / 100.0)), 1)
    return edits, min(100.0 * edits / n_ref, 100.0)


def make_teacher_targets(manifest, label_encoder, hp, n_teachers, variant, rng, opt):
    """{utt_id: [UttTargets of teacher k for k < N]}, synthetic but realistic."""
    phone_ids = [label_encoder.lab2ind[p] for p in PHONE_SETS[39]]
    n_labels = len(label_encoder)
    lo, hi = opt["teacher_per"]
    ctc_mean = rng.uniform(lo, hi, n_teachers)
    att_mean = rng.uniform(lo, hi, n_teachers)
    group = opt["agree_group"] if variant == "agree" else 1
    out = {}
    for utt_id, entry in manifest.items():
        ref = label_encoder.encode_sequence(entry["phn"].split())
        att_targets = ref + [hp["eos_index"]]
        row, shared = [], {}
        for k in range(n_teachers):
            leader = k - k % group
            if leader not in shared:
                edits, per = per_utterance_edits(ctc_mean[leader], len(ref), opt, rng)
                hyp = noisy_copy(ref, edits, phone_ids, rng)
                shared[leader] = (torch.tensor(hyp, dtype=torch.long), per, edits)
            hyp, ctc_per, ctc_edits = shared[leader]
            att_edits, att_per = per_utterance_edits(att_mean[k], len(ref), opt, rng)
            row.append(
                UttTargets(
                    ctc_hyp=hyp,
                    att_dist=peaked_distributions(att_targets, n_labels, rng),
                    ctc_per=ctc_per,
                    att_per=att_per,
                    ctc_edits=ctc_edits,
                    att_edits=att_edits,
                )
            )
        out[utt_id] = row
    return out


class SyntheticTeacher:
    """Stands in for ``mtkd.teachers.Teacher`` in the part's metadata."""

    def __init__(self, index):
        self.index = index

    def describe(self):
        return {
            "index": self.index,
            "path": f"synthetic/tea{self.index}/model.ckpt",
            "checksum": f"synthetic-{self.index}",
            "config": None,
            "hyperparams_file": None,
            "hyperparams": None,
        }


def write_store(folder, targets, manifest_path, label_encoder, hp, options):
    """Writes the targets as a one-part store with the project's PartWriter."""
    n_teachers = len(next(iter(targets.values())))
    store_options = StoreOptions(
        temperature=hp["temperature"],
        att_dist_dtype="float16",
        compression=options["compression"],
    )
    labels = [label_encoder.ind2lab[i] for i in range(len(label_encoder))]
    special = {k: hp[k] for k in ("blank_index", "bos_index", "eos_index")}
    splits = {SPLIT: manifest_info(manifest_path)}
    teachers = [SyntheticTeacher(k) for k in range(n_teachers)]
    settings = store_settings(labels, special, store_options, splits)
    meta = part_meta(
        teachers,
        settings,
        splits,
        os.path.join(folder, "teachers.txt"),
        n_teachers,
        store_options,
    )
    path = os.path.join(folder, part_file_name(range(n_teachers)))
    writer = PartWriter(path, meta, list(range(n_teachers)), store_options, len(labels))
    utt_ids = list(targets)
    rows = sum(t.att_dist.shape[0] for row in targets.values() for t in row)
    writer.begin_split(SPLIT, rows)
    for i in range(0, len(utt_ids), 8):
        chunk = utt_ids[i : i + 8]
        writer.append(chunk, [targets[u] for u in chunk])
    writer.end_split(SPLIT)
    writer.close()
    return folder


# --------------------------------------------------------------------------
# Brains and batches


def size_overrides(options):
    out = []
    for key in STUDENT_SIZES:
        value = options[key]
        out += [
            f"--{key}",
            json.dumps(value) if isinstance(value, list) else str(value),
        ]
    return out


def load_student_hparams(workdir, options):
    # The stage checks that its inputs exist: the stores are written into it.
    os.makedirs(os.path.join(workdir, "stores"), exist_ok=True)
    argv = [
        HPARAMS_FILE,
        "--data_folder", workdir,
        "--output_folder", os.path.join(workdir, "out"),
        "--tea_infer_dir", os.path.join(workdir, "stores"),
        "--batch_size", str(options["batch_size"]),
        "--augment", str(bool(options["augment"])),
        "--seed", str(options["seed"]),
        *size_overrides(options),
    ]  # fmt: skip
    return load_hparams(argv).hparams


def make_brains(hp, device="cpu"):
    """An ASRBrain and a KDBrain on the same modules, on ``device``, ready for
    fit_batch."""
    brains = []
    for cls in (ASRBrain, KDBrain):
        brain = cls(
            modules=hp["modules"],
            opt_class=hp["opt_class"],
            hparams=hp,
            run_opts={"device": device},
            checkpointer=None,
        )
        brain.on_fit_start()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.modules.train()
        brains.append(brain)
    return brains


def make_dataset(manifest_path, label_encoder, store=None):
    """The train pipeline of train_kd.py (audio, phones, teacher targets)."""
    data = sb.dataio.dataset.DynamicItemDataset.from_json(json_path=manifest_path)
    add_text_pipeline([data], label_encoder)
    add_audio_pipeline([data])
    keys = list(BASE_OUTPUT_KEYS)
    if store is not None:
        add_teacher_pipeline(data, store, SPLIT)
        keys.append(TEACHER_KEY)
    sb.dataio.dataset.set_output_keys([data], keys)
    return data


def make_batches(data, batches, collate):
    index = {utt_id: i for i, utt_id in enumerate(data.data_ids)}
    return [collate([data[index[u]] for u in ids]) for ids in batches]


def median_ms(times):
    return 1000.0 * statistics.median(times)


def reading_cost(store, batches, repeats):
    """Median ms per batch of TeacherStore.get x B and of the collation."""
    reads, collates, nbytes = [], [], 0
    for _ in range(repeats):
        for ids in batches:
            start = time.perf_counter()
            items = [store.get(SPLIT, u) for u in ids]
            mid = time.perf_counter()
            collated = collate_teacher_targets(items)
            end = time.perf_counter()
            reads.append(mid - start)
            collates.append(end - mid)
            nbytes = max(nbytes, sum(v.nbytes for v in collated.values()))
    return {
        "get_ms": median_ms(reads),
        "collate_ms": median_ms(collates),
        "total_ms": median_ms([a + b for a, b in zip(reads, collates, strict=True)]),
        "batch_teacher_bytes": nbytes,
    }


def pipeline_cost(data, batches, collate, repeats):
    """Median ms per batch to fetch the items and collate them (the loader)."""
    index = {utt_id: i for i, utt_id in enumerate(data.data_ids)}
    times = []
    for _ in range(repeats):
        for ids in batches:
            start = time.perf_counter()
            collate([data[index[u]] for u in ids])
            times.append(time.perf_counter() - start)
    return median_ms(times)


# --------------------------------------------------------------------------
# Timing the steps


def seed_step(seed):
    """Same augmentation and dropout for a KD step and its twin."""
    random.seed(seed)
    torch.manual_seed(seed)


def timed_step(brain, batch, seed):
    """(wall seconds, CPU seconds of this process) of one fit_batch."""
    seed_step(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    brain.fit_batch(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def set_strategy(kd, strategy):
    kd.hparams.strategy = strategy
    # Weight sums are per N: restart the stage's bookkeeping for each config.
    kd.on_stage_start(sb.Stage.TRAIN, 1)


def time_configs(sup, kd, configs, sup_batches, options):
    """Paired steps: {config name: {"pairs": [(sup wall, kd wall, sup cpu,
    kd cpu)], "rounds": [[pair index, ...] per round]}} in seconds."""
    n_batches = len(sup_batches)
    times = {c["name"]: {"pairs": [], "rounds": []} for c in configs}
    for c in configs:
        set_strategy(kd, c["strategy"])
        for i in range(options["warmup"]):
            timed_step(sup, sup_batches[i % n_batches], i)
            timed_step(kd, c["batches"][i % n_batches], i)
    for r in range(options["rounds"]):
        shift = r * max(len(configs) // max(options["rounds"], 1), 1)
        order = configs[shift % len(configs) :] + configs[: shift % len(configs)]
        for c in order:
            set_strategy(kd, c["strategy"])
            record = times[c["name"]]
            first = len(record["pairs"])
            for i in range(options["steps"]):
                b, seed = i % n_batches, 1000 * (r + 1) + i
                if i % 2 == 0:
                    s_wall, s_cpu = timed_step(sup, sup_batches[b], seed)
                    k_wall, k_cpu = timed_step(kd, c["batches"][b], seed)
                else:
                    k_wall, k_cpu = timed_step(kd, c["batches"][b], seed)
                    s_wall, s_cpu = timed_step(sup, sup_batches[b], seed)
                record["pairs"].append((s_wall, k_wall, s_cpu, k_cpu))
            record["rounds"].append(list(range(first, len(record["pairs"]))))
            got = record["pairs"][first:]
            log(
                options,
                f"  round {r + 1}/{options['rounds']} {c['name']:<28} sup "
                f"{median_ms([p[0] for p in got]):7.1f} ms  kd "
                f"{median_ms([p[1] for p in got]):7.1f} ms  paired ratio "
                f"{statistics.median(p[1] / p[0] for p in got):.3f}",
            )
    return times


def summarise_pairs(record):
    """Medians and paired ratios of one configuration's steps."""
    pairs = record["pairs"]
    wall = [k / s for s, k, _, _ in pairs]
    cpu = [kc / sc for _, _, sc, kc in pairs]
    quartiles = statistics.quantiles(wall, n=4) if len(wall) > 1 else wall * 3
    return {
        "supervised_ms": median_ms([p[0] for p in pairs]),
        "kd_ms": median_ms([p[1] for p in pairs]),
        "supervised_cpu_ms": median_ms([p[2] for p in pairs]),
        "kd_cpu_ms": median_ms([p[3] for p in pairs]),
        "ratio": statistics.median(wall),
        "ratio_iqr": [quartiles[0], quartiles[2]],
        "ratio_cpu": statistics.median(cpu),
        "ratio_of_medians": median_ms([p[1] for p in pairs])
        / median_ms([p[0] for p in pairs]),
        "round_ratios": [
            statistics.median(wall[i] for i in idx) for idx in record["rounds"]
        ],
        "pairs_ms": [[round(1000 * x, 3) for x in p] for p in pairs],
    }


# --------------------------------------------------------------------------
# Where the KD time goes


def synchronize():
    """Waits for the GPU's queued work (nothing to wait for on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed_median(fn, repeats):
    times = []
    for _ in range(repeats + 1):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return median_ms(times[1:])


def kd_components(kd, batches, repeats):
    """KD parts alone on the real student outputs of each batch (ms, medians).

    Forward + backward from detached copies of the student's log-probabilities
    (so the encoder/decoder backward is not counted): ``weights`` (the
    strategy's W and the epoch bookkeeping of ``KDBrain._add_weights``),
    ``ctc_kd`` (``ctc_kd_loss``, of which ``merge`` is ``merge_ctc_targets``),
    ``seq_kd`` (``seq_kd_loss``); ``sup`` the supervised CTC + NLL for scale;
    ``M`` the CTC targets left after merging and skipping, per batch.
    """
    hp = kd.hparams
    parts = {k: [] for k in ("weights", "merge", "ctc_kd", "seq_kd", "sup")}
    targets_m = []
    for b, batch in enumerate(batches):
        seed_step(b)
        with torch.no_grad():
            pred = kd.compute_forward(batch, sb.Stage.TRAIN)
        t = batch.teacher
        raw_ctc = pred.p_ctc.detach().requires_grad_()
        raw_seq = pred.p_seq.detach().requires_grad_()
        _, eos_lens = batch.phn_encoded_eos

        def weights(t=t):
            w_ctc, w_seq = strategy_weights(
                hp.strategy,
                t["ctc_per"],
                t["att_per"],
                scope=hp.weight_scope,
                weight_temperature=hp.weight_temperature,
            )
            for w in (w_ctc, w_seq):
                weight_stats(w)
            return w_ctc, w_seq

        w_ctc, w_seq = weights()
        utt, _, _, _ = merge_ctc_targets(t["ctc_hyps"], t["ctc_hyp_lens"], w_ctc)
        targets_m.append(int(utt.numel()))

        def ctc(raw=raw_ctc, t=t, w=w_ctc, lens=pred.wav_lens):
            raw.grad = None
            p = torch.log_softmax(raw / hp.temperature, dim=-1)
            loss = ctc_kd_loss(
                p, lens, t["ctc_hyps"], t["ctc_hyp_lens"], w, hp.blank_index
            )
            loss.backward()

        def seq(raw=raw_seq, t=t, w=w_seq, lens=eos_lens):
            raw.grad = None
            p = torch.log_softmax(raw / hp.temperature, dim=-1)
            seq_kd_loss(p, t["att_dist"], w, lens).backward()

        def sup(raw_ctc=raw_ctc, raw_seq=raw_seq, batch=batch, pred=pred):
            raw_ctc.grad = raw_seq.grad = None
            p = pred._replace(p_ctc=raw_ctc, p_seq=raw_seq)
            loss_ctc, loss_seq = kd.supervised_losses(p, batch)
            (hp.ctc_weight * loss_ctc + (1 - hp.ctc_weight) * loss_seq).backward()

        parts["weights"].append(timed_median(weights, repeats))
        parts["merge"].append(
            timed_median(
                lambda t=t, w=w_ctc: merge_ctc_targets(
                    t["ctc_hyps"], t["ctc_hyp_lens"], w
                ),
                repeats,
            )
        )
        parts["ctc_kd"].append(timed_median(ctc, repeats))
        parts["seq_kd"].append(timed_median(seq, repeats))
        parts["sup"].append(timed_median(sup, repeats))
    out = {k: statistics.mean(v) for k, v in parts.items()}
    out["kd_total"] = out["weights"] + out["ctc_kd"] + out["seq_kd"]
    out["M"] = statistics.mean(targets_m)
    out["M_max"] = len(batches[0].teacher["ctc_per"].view(-1))
    return out


# --------------------------------------------------------------------------
# The run


def resolve_options(options):
    unknown = set(options) - set(DEFAULTS) - {"quick"}
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS)
    if options.get("quick"):
        out.update(QUICK)
    out.update({k: v for k, v in options.items() if k != "quick"})
    out["quick"] = bool(options.get("quick"))
    if out["compression"] == "none":
        out["compression"] = None
    bad = [s for s in out["strategies"] if s not in STRATEGIES]
    bad += [v for v in out["variants"] if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown strategies/variants {bad}")
    return out


def machine():
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "torch": torch.__version__,
        "speechbrain": sb.__version__,
        "threads": torch.get_num_threads(),
    }


def run(**options):
    """Runs the benchmark; returns a JSON-able dict (see ``DEFAULTS``)."""
    opt = resolve_options(options)
    torch.set_num_threads(opt["threads"])
    workdir = opt["workdir"] or tempfile.mkdtemp(prefix="kd_step_")
    os.makedirs(workdir, exist_ok=True)
    started = time.time()
    machine_before = machine()
    try:
        result = _run(opt, workdir)
    finally:
        if not opt["workdir"]:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = machine_before
    result["machine"]["load_average_after"] = machine()["load_average"]
    result["machine"]["device"] = opt["device"]
    if opt["device"].startswith("cuda"):
        result["machine"]["device_name"] = torch.cuda.get_device_name(
            torch.device(opt["device"])
        )
    result["seconds"] = time.time() - started
    if opt["json_path"]:
        folder = os.path.dirname(os.path.abspath(opt["json_path"]))
        os.makedirs(folder, exist_ok=True)
        tmp = opt["json_path"] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, opt["json_path"])
    return result


def _run(opt, workdir):
    rng = np.random.default_rng(opt["seed"])
    hp = load_student_hparams(workdir, opt)
    label_encoder = build_label_encoder(hp, os.path.join(workdir, "label_encoder.txt"))
    corpus = os.path.join(workdir, "corpus")
    os.makedirs(corpus, exist_ok=True)
    manifest, batch_ids = make_corpus(corpus, opt, rng)
    manifest_path = hp["train_annotation"]
    os.makedirs(os.path.dirname(manifest_path), exist_ok=True)
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)

    sup_data = make_dataset(manifest_path, label_encoder)
    sup_batches = make_batches(sup_data, batch_ids, PaddedBatch)
    n_params = sum(p.numel() for p in hp["model"].parameters() if p.requires_grad)
    sup, kd = make_brains(hp, opt["device"])

    stores, configs, reading = {}, [], {}
    for n in opt["teachers"]:
        for variant in opt["variants"]:
            if n == 1 and variant == "agree" and "disagree" in opt["variants"]:
                continue  # one teacher: nothing to agree with
            key = f"N{n}-{variant}"
            log(opt, f"writing store {key} ...")
            targets = make_teacher_targets(
                manifest, label_encoder, hp, n, variant, rng, opt
            )
            folder = os.path.join(workdir, "stores", key)
            write_store(folder, targets, manifest_path, label_encoder, hp, opt)
            store = TeacherStore(folder)
            check_store_matches(store, dict(hp, tea_infer_dir=folder), label_encoder)
            data = make_dataset(manifest_path, label_encoder, store)
            batches = make_batches(data, batch_ids, KDBatch)
            stores[key] = store
            reading[key] = {
                "teachers": n,
                "variant": variant,
                "store_bytes": sum(os.path.getsize(p) for p in store.files),
                **reading_cost(store, batch_ids, 3),
                "loader_kd_batch_ms": pipeline_cost(data, batch_ids, KDBatch, 2),
            }
            for strategy in opt["strategies"]:
                configs.append(
                    {
                        "name": f"N{n} {variant} {strategy}",
                        "teachers": n,
                        "variant": variant,
                        "strategy": strategy,
                        "batches": batches,
                    }
                )
    loader_sup_ms = pipeline_cost(sup_data, batch_ids, PaddedBatch, 2)

    log(opt, f"timing {len(configs)} KD configurations (+ paired supervised steps)")
    times = time_configs(sup, kd, configs, sup_batches, opt)

    log(opt, "timing the KD parts alone ...")
    components = {}
    for c in configs:
        set_strategy(kd, c["strategy"])
        components[c["name"]] = kd_components(
            kd, c["batches"], opt["component_repeats"]
        )

    rows = []
    for c in configs:
        summary = summarise_pairs(times[c["name"]])
        goal = GOALS.get(c["teachers"])
        parts = components[c["name"]]
        rows.append(
            {
                "teachers": c["teachers"],
                "variant": c["variant"],
                "strategy": c["strategy"],
                **summary,
                # 1 + (KD parts timed alone) / (supervised step): less noisy.
                "ratio_from_parts": 1 + parts["kd_total"] / summary["supervised_ms"],
                "goal": goal,
                "met": None if goal is None else bool(summary["ratio"] <= goal),
                "ctc_targets_M": parts["M"],
                "ctc_targets_max": parts["M_max"],
                "components_ms": parts,
            }
        )
    all_sup = [p[0] for c in configs for p in times[c["name"]]["pairs"]]
    goals = {}
    for n, goal in GOALS.items():
        judged = [r for r in rows if r["teachers"] == n and r["variant"] == "disagree"]
        if judged:
            worst = max(judged, key=lambda r: r["ratio"])
            goals[f"N{n}"] = {
                "goal": goal,
                "worst_strategy": worst["strategy"],
                "worst_ratio": worst["ratio"],
                "worst_ratio_cpu": max(r["ratio_cpu"] for r in judged),
                "worst_ratio_from_parts": max(r["ratio_from_parts"] for r in judged),
                "met": worst["ratio"] <= goal,
            }
    for store in stores.values():
        store.close()
    options_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opt.items()}
    return {
        "benchmark": "kd_step",
        "options": options_out,
        "student": {
            "sizes": {k: opt[k] for k in STUDENT_SIZES},
            "parameters": n_params,
        },
        "supervised_ms_overall": median_ms(all_sup),
        "goals": goals,
        "original_recipe_ratio_N10": ORIGINAL_RATIO_N10,
        "rows": rows,
        "reading": reading,
        "loader_supervised_batch_ms": loader_sup_ms,
    }


# --------------------------------------------------------------------------
# Report


def markdown(result):
    """The results as markdown tables (steps, KD parts, reading)."""
    opt = result["options"]
    m = result["machine"]
    lines = [
        f"KD step vs supervised step: student {result['student']['parameters']:,} "
        f"parameters, batch {opt['batch_size']}, {m['cpu_count']} CPU cores, "
        f"{m['threads']} torch thread(s), torch {m['torch']}, load average "
        f"{_load(m['load_average'])} -> {_load(m['load_average_after'])}; "
        f"median of {opt['rounds']} x {opt['steps']} steps (+{opt['warmup']} warm-up)",
        "",
        "| N | hyps | strategy | CTC targets M | supervised ms | KD ms | ratio "
        "| (IQR) | per round | CPU-time ratio | from parts | goal | met? |",
        "|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        goal = f"<= {r['goal']:.2f}" if r["goal"] else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        per_round = " ".join(f"{x:.2f}" for x in r["round_ratios"])
        iqr = "-".join(f"{x:.2f}" for x in r["ratio_iqr"])
        lines.append(
            f"| {r['teachers']} | {r['variant']} | {r['strategy']} | "
            f"{r['ctc_targets_M']:.0f}/{r['ctc_targets_max']} | "
            f"{r['supervised_ms']:.1f} | {r['kd_ms']:.1f} | **{r['ratio']:.3f}** | "
            f"{iqr} | {per_round} | {r['ratio_cpu']:.3f} | "
            f"{r['ratio_from_parts']:.3f} | {goal} | {met} |"
        )
    lines += [
        "",
        "ratio: median over paired steps (same batch, same seed, adjacent in "
        "time) of KD wall time / supervised wall time; IQR its quartiles; CPU-time "
        "ratio: the same with this process's CPU time (insensitive to other "
        "processes taking the cores); from parts: 1 + (KD parts timed alone, "
        "below) / supervised ms.",
    ]
    lines += [
        "",
        "KD parts alone, forward + backward on the real student outputs (ms per "
        "batch; the supervised CTC + NLL losses for scale):",
        "",
        "| N | hyps | strategy | weights | ctc_kd (merge) | seq_kd | KD parts "
        "| KD - supervised step | sup. losses |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        c = r["components_ms"]
        lines.append(
            f"| {r['teachers']} | {r['variant']} | {r['strategy']} | "
            f"{c['weights']:.2f} | {c['ctc_kd']:.2f} ({c['merge']:.2f}) | "
            f"{c['seq_kd']:.2f} | {c['kd_total']:.2f} | "
            f"{r['kd_ms'] - r['supervised_ms']:.1f} | {c['sup']:.2f} |"
        )
    lines += [
        "",
        "Teacher targets per batch, in the DataLoader (not in the step): "
        f"audio + phones alone {result['loader_supervised_batch_ms']:.1f} ms",
        "",
        "| N | hyps | store MB | get x B ms | collate ms | get + collate ms "
        "| whole KD batch ms | teacher tensors MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["reading"].values():
        lines.append(
            f"| {r['teachers']} | {r['variant']} | {r['store_bytes'] / 1e6:.2f} | "
            f"{r['get_ms']:.2f} | {r['collate_ms']:.2f} | {r['total_ms']:.2f} | "
            f"{r['loader_kd_batch_ms']:.1f} | {r['batch_teacher_bytes'] / 1e6:.2f} |"
        )
    lines.append("")
    for name, g in result["goals"].items():
        lines.append(
            f"Goal {name} (disagreeing teachers, worst strategy: {g['worst_strategy']}"
            f"): ratio {g['worst_ratio']:.3f} vs <= {g['goal']:.2f}: "
            f"{'met' if g['met'] else 'NOT met'} (worst CPU-time ratio "
            f"{g['worst_ratio_cpu']:.3f}, from parts {g['worst_ratio_from_parts']:.3f})"
        )
    original = result["original_recipe_ratio_N10"]
    lines.append(f"(The original recipe measured {original} at N = 10.)")
    return "\n".join(lines)


def _load(load):
    return "?" if load is None else f"{load[0]:.2f}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: N 1, 10")
    parser.add_argument("--teachers", type=int, nargs="+")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS)
    for key in (
        "batch_size",
        "n_batches",
        "steps",
        "rounds",
        "warmup",
        "component_repeats",
        "threads",
        "seed",
        "agree_group",
    ):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int)
    parser.add_argument("--compression", choices=("gzip", "lzf", "none"))
    parser.add_argument(
        "--augment",
        dest="augment",
        action=argparse.BooleanOptionalAction,
        help="the original's waveform augmentation in the step (default: on, "
        "as the recipe)",
    )
    parser.add_argument("--json", dest="json_path", help=f"default {DEFAULT_JSON}")
    parser.add_argument("--workdir", help="keep the corpus and stores here")
    parser.add_argument("--quiet", action="store_true", default=None)
    parser.add_argument("--device", help="cpu (default), cuda or cuda:N")
    group = parser.add_argument_group("student sizes (the demo's by default)")
    for key, value in STUDENT_SIZES.items():
        if isinstance(value, list):
            group.add_argument(f"--{key}", type=int, nargs="+")
        else:
            group.add_argument(f"--{key}", type=int)
    args = vars(parser.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def main(argv=None):
    options = parse_args(sys.argv[1:] if argv is None else argv)
    result = run(**options)
    print(markdown(result))
    if result["options"]["json_path"]:
        print(f"\nJSON: {result['options']['json_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
