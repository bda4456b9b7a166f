"""Micro-benchmark of the CTC KD loss: one batched call vs a per-teacher loop.

Times forward + backward of the CTC distillation loss on random tensors
(B=8 utterances, T=150 frames, V=42 labels, hypotheses of ~30 phonemes) for
N = 1, 10, 100 teachers, median of several repeats:

- ``batched``: ``mtkd.strategies.ctc_kd_loss`` with uniform weights and N
  distinct hypotheses per utterance (no pair can be merged or skipped: its
  worst case);
- ``batched_dup``: the same, but the teachers share 3 distinct hypotheses per
  utterance (as teachers that mostly agree do), merged to 3 CTC terms;
- ``batched_onehot``: one-hot rows (a different teacher per utterance), so all
  but B pairs have weight 0 and are skipped (the paper's tau = 1 softmax only
  gets there for teachers >~ 28 PER points behind, see ``MIN_CTC_WEIGHT``);
- ``loop_ctc``: sum_k w_k * F.ctc_loss(teacher k, reduction="mean"), one call
  per teacher;
- ``loop_sb``: sum_k w_k * speechbrain ``ctc_loss_kd`` fed a teacher posterior
  per teacher (the original recipe: argmax + CTC filtering in Python).

Usage: ``python bench/kd_loss_micro.py [--repeats 7] [--threads 1] [--device cpu]``.
On a 2-vCPU VM, torch's default of 2 intra-op threads made every CTC call ~6x
slower and the timings erratic (thread contention); ``--threads 1`` is stable.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import ctc_loss_kd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mtkd.strategies import best_teacher_weights, ctc_kd_loss  # noqa: E402

B, T, V, H, BLANK = 8, 150, 42, 30, 0


def random_hyps(n_teachers, n_distinct, generator):
    """[B, N, H+5] hypotheses drawn from n_distinct per utterance, [B, N] lengths."""
    lens = torch.randint(H - 5, H + 6, (B, n_distinct), generator=generator)
    pool = torch.randint(1, V, (B, n_distinct, H + 5), generator=generator)
    pool = pool * (torch.arange(H + 5) < lens.unsqueeze(-1))
    pick = torch.randint(0, n_distinct, (B, n_teachers), generator=generator)
    pick[:, :n_distinct] = torch.arange(min(n_distinct, n_teachers))
    hyps = torch.gather(pool, 1, pick.unsqueeze(-1).expand(-1, -1, H + 5))
    return hyps, torch.gather(lens, 1, pick)


def posteriors(hyps, lens):
    """Per teacher, [B, T, V] one-hot frames whose argmax path collapses to hyps."""
    out = []
    for k in range(hyps.shape[1]):
        path = torch.full((B, T), BLANK, dtype=torch.long)
        for b in range(B):
            length = int(lens[b, k])
            path[b, 0 : 2 * length : 2] = hyps[b, k, :length]
        out.append(F.one_hot(path, V).float())
    return out


def loop_ctc(p_ctc, wav_lens, hyps, lens, w):
    input_lens = torch.round(wav_lens * T).long()
    total = 0.0
    for k in range(hyps.shape[1]):
        loss = F.ctc_loss(
            p_ctc.transpose(0, 1),
            hyps[:, k],
            input_lens,
            lens[:, k],
            blank=BLANK,
            zero_infinity=True,
        )
        total = total + w[k] * loss
    return total


def loop_sb(p_ctc, wav_lens, posts, w):
    total = 0.0
    for k, post in enumerate(posts):
        total = total + w[k] * ctc_loss_kd(p_ctc, post, wav_lens, BLANK, "cpu")
    return total


def timed(fn, logits, repeats, device):
    """Median and min seconds of fn(log_softmax(logits)).backward() (+1 warmup)."""
    times = []
    for _ in range(repeats + 1):
        logits.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(logits.log_softmax(-1)).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), min(times[1:])


def bench_teachers(n, args, device, generator):
    """Prints one line per method for N = n teachers."""
    logits = torch.randn(B, T, V, generator=generator).to(device)
    logits.requires_grad_()
    wav_lens = (0.6 + 0.4 * torch.rand(B, generator=generator)).to(device)
    wav_lens[0] = 1.0
    hyps, lens = random_hyps(n, n, generator)
    dup_hyps, dup_lens = random_hyps(n, min(3, n), generator)
    hyps, lens = hyps.to(device), lens.to(device)
    dup_hyps, dup_lens = dup_hyps.to(device), dup_lens.to(device)
    uniform = torch.full((B, n), 1.0 / n, device=device)
    onehot = best_teacher_weights(torch.rand(B, n, generator=generator)).to(device)
    w = uniform[0].tolist()
    methods = {
        "loop_ctc": lambda p: loop_ctc(p, wav_lens, hyps, lens, w),
        "batched": lambda p: ctc_kd_loss(p, wav_lens, hyps, lens, uniform, BLANK),
        "batched_dup": lambda p: ctc_kd_loss(
            p, wav_lens, dup_hyps, dup_lens, uniform, BLANK
        ),
        "batched_onehot": lambda p: ctc_kd_loss(p, wav_lens, hyps, lens, onehot, BLANK),
    }
    if not args.skip_sb and device.type == "cpu":
        posts = posteriors(hyps.cpu(), lens.cpu())
        methods["loop_sb"] = lambda p: loop_sb(p, wav_lens, posts, w)
    reference = None
    for name, fn in methods.items():
        median, fastest = timed(fn, logits, args.repeats, device)
        reference = reference or median
        print(
            f"{n:>4} {name:<14} {1000 * median:9.2f} {1000 * fastest:9.2f}"
            f" {median / reference:10.2f}"
        )
    with torch.no_grad():
        p = logits.log_softmax(-1)
        a, b = methods["batched"](p), methods["loop_ctc"](p)
        assert torch.allclose(a, b, rtol=1e-4), (a, b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teachers", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--skip-sb", action="store_true", help="skip loop_sb")
    parser.add_argument("--threads", type=int, default=0, help="0: torch default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    print(
        f"B={B} T={T} V={V} H~{H} device={device} threads={torch.get_num_threads()}"
        f" torch={torch.__version__}; median of {args.repeats}, ms (fwd+bwd)"
    )
    print(f"{'N':>4} {'method':<14} {'median':>9} {'min':>9} {'x loop_ctc':>10}")
    for n in args.teachers:
        bench_teachers(n, args, device, generator)


if __name__ == "__main__":
    main()
