"""Unit tests of mtkd.strategies: weights against hand-worked numbers, and the
batched KD losses against SpeechBrain's per-teacher ``ctc_loss_kd`` /
``nll_loss_kd`` as the original recipe calls them."""

import math

import pytest
import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import ctc_loss_kd, nll_loss_kd

from mtkd.strategies import (
    MIN_CTC_WEIGHT,
    best_teacher_weights,
    branch_losses,
    ctc_kd_loss,
    kd_objective,
    mean_teacher_weights,
    merge_ctc_targets,
    pooled_mean,
    seq_kd_loss,
    softmax_weights,
    strategy_weights,
    student_kd_log_probs,
    tied_best_weights,
    weight_entropy,
    weight_stats,
)

BLANK = 0


def close(actual, expected, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        rtol=rtol,
        atol=atol,
    )


# --------------------------------------------------------------------- weights

# softmax(90, 80) = [1, e^-10] / (1 + e^-10); e^-10 = 4.539993e-5
PAPER_10_20 = [1 / (1 + math.exp(-10)), math.exp(-10) / (1 + math.exp(-10))]
# tau = 10: softmax(9, 8) = [1, e^-1] / (1 + e^-1) = [0.7310586, 0.2689414]
TAU10_10_20 = [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]


def test_softmax_weights_batch_scope_by_hand():
    w = softmax_weights(torch.tensor([[10.0, 20.0]]))
    close(w, [PAPER_10_20], rtol=1e-6)
    close(w[0, 0], 0.9999546, rtol=1e-7)
    close(w[0, 1], 0.0000454, rtol=1e-3)
    w = softmax_weights(torch.tensor([[10.0, 20.0]]), weight_temperature=10.0)
    close(w, [TAU10_10_20], rtol=1e-6)
    close(w[0], [0.7310586, 0.2689414], rtol=1e-6)


def test_softmax_weights_batch_scope_uses_batch_mean_per():
    # teacher means over the two utterances: (10+10)/2 = 10, (30+10)/2 = 20
    per = torch.tensor([[10.0, 30.0], [10.0, 10.0]])
    w = softmax_weights(per, "batch", 10.0)
    close(w, [TAU10_10_20, TAU10_10_20], rtol=1e-6)


def test_softmax_weights_utterance_scope_rows_by_hand():
    per = torch.tensor([[10.0, 30.0], [10.0, 10.0]])
    w = softmax_weights(per, "utterance", 10.0)
    # row 0: softmax(9, 7) = [1, e^-2] / (1 + e^-2) = [0.8807971, 0.1192029]
    # row 1: softmax(9, 9) = [0.5, 0.5]
    close(w, [[0.8807971, 0.1192029], [0.5, 0.5]], rtol=1e-6)
    # tau = 1 (the paper): row 0 softmax(90, 70): e^-20 = 2.06e-9 on teacher 2
    w = softmax_weights(per, "utterance")
    close(w[0, 1], math.exp(-20) / (1 + math.exp(-20)), rtol=1e-5)


def test_softmax_weights_rejects_bad_arguments():
    with pytest.raises(ValueError, match="utterance"):
        softmax_weights(torch.zeros(1, 2), scope="sentence")
    with pytest.raises(ValueError, match="> 0"):
        softmax_weights(torch.zeros(1, 2), weight_temperature=0.0)


def test_best_teacher_weights_one_hot_ties_to_lowest_index():
    per = torch.tensor([[5.0, 3.0, 3.0], [7.0, 7.0, 9.0], [0.0, 0.0, 0.0]])
    expected = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    close(best_teacher_weights(per), expected)


def test_strategy_weights_by_hand():
    ctc_per = torch.tensor([[10.0, 20.0], [10.0, 20.0]])
    att_per = torch.tensor([[30.0, 20.0], [10.0, 40.0]])
    w_ctc, w_seq = strategy_weights("average", ctc_per, att_per)
    close(w_ctc, [[0.5, 0.5]] * 2)
    close(w_seq, [[0.5, 0.5]] * 2)

    w_ctc, w_seq = strategy_weights("best", ctc_per, att_per, "batch", 10.0)
    close(w_ctc, [TAU10_10_20] * 2, rtol=1e-6)
    close(w_seq, [[0.0, 1.0], [1.0, 0.0]])  # per utterance, whatever tau

    # att means: (30+10)/2 = 20, (20+40)/2 = 30 -> softmax(80, 70) / 10 = tau10
    w_ctc, w_seq = strategy_weights("weighted", ctc_per, att_per, "batch", 10.0)
    close(w_ctc, [TAU10_10_20] * 2, rtol=1e-6)
    close(w_seq, [TAU10_10_20] * 2, rtol=1e-6)
    # utterance scope: row 0 softmax(7, 8) = reversed tau10; row 1 softmax(9, 6):
    # [1, e^-3] / (1 + e^-3) = [0.9525741, 0.0474259]
    _, w_seq = strategy_weights("weighted", ctc_per, att_per, "utterance", 10.0)
    close(w_seq, [TAU10_10_20[::-1], [0.9525741, 0.0474259]], rtol=1e-6)

    average3, _ = strategy_weights("average", torch.zeros(2, 3), torch.zeros(2, 3))
    close(average3, torch.full((2, 3), 1 / 3), rtol=1e-6)


def test_tied_best_weights_spread_over_ties_by_hand():
    per = torch.tensor(
        [[10.0, 5.0, 5.0, 7.0], [3.0, 7.0, 3.0, 3.0], [4.0, 6.0, 8.0, 9.0],
         [2.5, 2.5, 2.5, 2.5]]
    )  # fmt: skip
    expected = [
        [0.0, 0.5, 0.5, 0.0],  # teachers 1 and 2 tied at 5
        [1 / 3, 0.0, 1 / 3, 1 / 3],  # three tied at 3
        [1.0, 0.0, 0.0, 0.0],  # no tie: top-k is "best" on this row
        [0.25, 0.25, 0.25, 0.25],  # all tied: top-k is "average" on this row
    ]
    close(tied_best_weights(per), expected, rtol=1e-7)


def test_top_k_strategy_weights_by_hand():
    ctc_per = torch.tensor([[10.0, 20.0, 10.0], [10.0, 20.0, 10.0]])
    att_per = torch.tensor([[30.0, 20.0, 20.0], [10.0, 40.0, 25.0]])
    w_ctc, w_seq = strategy_weights("top-k", ctc_per, att_per, "batch", 10.0)
    # CTC as "best": softmax((100 - [10, 20, 10]) / 10) = [1, e^-1, 1] / (2 + e^-1)
    z = 2 + math.exp(-1)
    close(w_ctc, [[1 / z, math.exp(-1) / z, 1 / z]] * 2, rtol=1e-6)
    close(w_ctc, strategy_weights("best", ctc_per, att_per, "batch", 10.0)[0])
    close(w_seq, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


def test_seq_kd_loss_top_k_matches_speechbrain_and_loop():
    B, N, L1, V = 3, 4, 7, 5
    logits, att_dist, eos_lens, steps = seq_batch(B, N, L1, V, seed=21)
    p_seq = logits.log_softmax(-1)
    att_per = torch.tensor(
        [[20.0, 10.0, 10.0, 30.0], [5.0, 9.0, 8.0, 7.0], [4.0, 4.0, 4.0, 6.0]]
    )
    _, W = strategy_weights("top-k", att_per, att_per)
    close(W, [[0, 0.5, 0.5, 0], [1, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0]], rtol=1e-7)
    loss = seq_kd_loss(p_seq, att_dist, W.double(), eos_lens)
    # SpeechBrain's nll_loss_kd per teacher, each against its W-scaled target
    # (the loss is linear in the target), summed
    expected = sum(
        nll_loss_kd(p_seq, W[:, k, None, None].double() * att_dist[:, k], eos_lens)
        for k in range(N)
    )
    close(loss, expected)
    # by hand: utterance 0 takes the mean of teachers 1 and 2, utterance 2 of 0-2
    mean_targets = torch.stack(
        [
            (att_dist[0, 1] + att_dist[0, 2]) / 2,
            att_dist[1, 0],
            (att_dist[2, 0] + att_dist[2, 1] + att_dist[2, 2]) / 3,
        ]
    )
    # (W is float32: 1/3 is rounded to 1e-8)
    close(loss, nll_loss_kd(p_seq, mean_targets, eos_lens), rtol=1e-7)
    total = sum(
        -(mean_targets[b, t] * p_seq[b, t]).sum()
        for b in range(B)
        for t in range(int(steps[b]))
    )
    close(loss, total / steps.sum(), rtol=1e-7)


def test_strategy_weights_unknown_strategy():
    with pytest.raises(ValueError, match="average.*best.*weighted.*top-k"):
        strategy_weights("ensemble", torch.zeros(1, 2), torch.zeros(1, 2))


def test_weight_entropy_and_summary():
    uniform = torch.full((3, 4), 0.25)
    assert weight_entropy(uniform) == pytest.approx(math.log(4))  # 2 bits
    assert weight_entropy(torch.eye(4)) == 0.0
    # rows [0.5, 0.5] (ln 2) and [1, 0] (0): mean ln(2) / 2 = 0.3465736
    mixed = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert weight_entropy(mixed) == pytest.approx(0.3465736, rel=1e-6)
    assert mean_teacher_weights(mixed) == pytest.approx([0.75, 0.25])
    stats = weight_stats(mixed)  # the weights log's per-batch figures
    assert stats["entropy_nats"] == pytest.approx(0.3465736, rel=1e-6)
    assert stats["mean_weight_per_teacher"] == pytest.approx([0.75, 0.25])
    assert stats["mean_top_weight"] == pytest.approx(0.75)


# ------------------------------------------------------------------ CTC loss


def teacher_posterior(hyps, lens, T, V):
    """[B, T, V] one-hot frame posteriors whose argmax path collapses to hyps.

    Path: tok0, blank, tok1, blank, ..., last token, then blanks (2L-1 frames).
    """
    B = hyps.shape[0]
    path = torch.full((B, T), BLANK, dtype=torch.long)
    for b in range(B):
        for i in range(int(lens[b])):
            path[b, 2 * i] = hyps[b, i]
    return F.one_hot(path, V).double()


def reference_ctc_loss_kd(p_ctc, wav_lens, ctc_hyps, ctc_hyp_lens, w):
    """sum_k w_k * SpeechBrain ctc_loss_kd, fed teacher posteriors as the recipe."""
    _, T, V = p_ctc.shape
    total = 0.0
    for k in range(ctc_hyps.shape[1]):
        posterior = teacher_posterior(ctc_hyps[:, k], ctc_hyp_lens[:, k], T, V)
        total = total + w[k] * ctc_loss_kd(p_ctc, posterior, wav_lens, BLANK, "cpu")
    return total


def reference_ctc_loop(p_ctc, wav_lens, ctc_hyps, ctc_hyp_lens, W, blank=BLANK):
    """mean_b sum_k W[b, k] * F.ctc_loss(one utterance, reduction="mean")."""
    B, T, _ = p_ctc.shape
    input_lens = torch.round(wav_lens * T).long()
    total = 0.0
    for b in range(B):
        for k in range(ctc_hyps.shape[1]):
            loss = F.ctc_loss(
                p_ctc[b : b + 1].transpose(0, 1),
                ctc_hyps[b : b + 1, k],
                input_lens[b : b + 1],
                ctc_hyp_lens[b : b + 1, k],
                blank=blank,
                zero_infinity=True,
            )
            total = total + W[b, k] * loss
    return total / B


def student_log_probs(B, T, V, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=generator, dtype=dtype)
    return logits.requires_grad_()


def hand_batch():
    """B=2, N=3, T=8, V=5: a duplicate (utt 0, teachers 0 and 1), an empty hyp."""
    hyps = torch.tensor(
        [
            [[1, 2, 2], [1, 2, 2], [3, 0, 0]],
            [[0, 0, 0], [4, 1, 0], [2, 3, 0]],
        ]
    )
    lens = torch.tensor([[3, 3, 1], [0, 2, 2]])
    wav_lens = torch.tensor([1.0, 0.75])  # 8 and 6 frames
    return hyps, lens, wav_lens


@pytest.mark.parametrize("w", [[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]])
def test_ctc_kd_loss_matches_speechbrain_ctc_loss_kd(w):
    hyps, lens, wav_lens = hand_batch()
    logits = student_log_probs(2, 8, 5, seed=0)
    p_ctc = logits.log_softmax(-1)
    W = torch.tensor([w, w], dtype=torch.float64)
    loss = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W, BLANK)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    expected = reference_ctc_loss_kd(p_ctc, wav_lens, hyps, lens, w)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    close(loss, expected)
    close(grad, expected_grad)
    close(loss, reference_ctc_loop(p_ctc, wav_lens, hyps, lens, W))


def test_merge_ctc_targets_sums_duplicates_and_drops_zero_weights():
    hyps, lens, _ = hand_batch()
    hyps[1, 0] = torch.tensor([7, 7, 7])  # padding past length 0 is ignored
    W = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
    utt, merged, merged_lens, weights = merge_ctc_targets(hyps, lens, W)
    # utt 0: [1,2,2] twice (0.6 + 0.4), [3] dropped; utt 1: [] 0.6, [4,1] 0.4
    assert utt.tolist() == [0, 1, 1]
    assert merged_lens.tolist() == [3, 0, 2]
    assert merged.tolist() == [[1, 2, 2], [0, 0, 0], [4, 1, 0]]
    close(weights, [1.0, 0.6, 0.4], rtol=1e-7)
    # the threshold applies after merging: utt 0's two copies of [1, 2, 2] at
    # MIN each are kept (2 MIN); utt 1's [4, 1] at MIN alone is dropped
    tiny = MIN_CTC_WEIGHT
    W = torch.tensor(
        [[tiny, tiny, 1.0 - 2 * tiny], [1.0 - 3 * tiny, tiny, 2 * tiny]],
        dtype=torch.float64,
    )
    utt, merged, merged_lens, weights = merge_ctc_targets(hyps, lens, W)
    assert utt.tolist() == [0, 0, 1, 1]
    assert merged.tolist() == [[3, 0, 0], [1, 2, 2], [0, 0, 0], [2, 3, 0]]
    assert merged_lens.tolist() == [1, 3, 0, 2]
    close(weights, [1.0 - 2 * tiny, 2 * tiny, 1.0 - 3 * tiny, 2 * tiny])


def test_ctc_kd_loss_all_empty_and_all_zero():
    logits = student_log_probs(2, 6, 4, seed=1)
    p_ctc = logits.log_softmax(-1)
    wav_lens = torch.tensor([1.0, 0.5])
    hyps = torch.zeros(2, 2, 0, dtype=torch.long)
    lens = torch.zeros(2, 2, dtype=torch.long)
    W = torch.full((2, 2), 0.5, dtype=torch.float64)
    # empty target: the all-blank path, per-token divisor clamped to 1
    expected = -(p_ctc[0, :6, BLANK].sum() + p_ctc[1, :3, BLANK].sum()) / 2
    close(ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W, BLANK), expected)
    zero = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, torch.zeros(2, 2), BLANK)
    assert zero.item() == 0.0 and zero.shape == ()
    zero.backward()


def random_batch(B, N, T, V, seed, max_len=6):
    generator = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, max_len + 1, (B, N), generator=generator)
    hyps = torch.randint(1, V, (B, N, max_len + 2), generator=generator)
    hyps = hyps * (torch.arange(max_len + 2) < lens.unsqueeze(-1))
    hyps[:, 2], lens[:, 2] = hyps[:, 0], lens[:, 0]  # teacher 2 repeats teacher 0
    lens[1, 3] = 0  # at least one empty hypothesis
    wav_lens = 0.7 + 0.3 * torch.rand(B, generator=generator)
    wav_lens[0] = 1.0
    return hyps, lens, wav_lens


def test_ctc_kd_loss_random_batch_scope_matches_both_references():
    B, N, T, V = 3, 4, 20, 6
    hyps, lens, wav_lens = random_batch(B, N, T, V, seed=2)
    logits = student_log_probs(B, T, V, seed=3)
    p_ctc = logits.log_softmax(-1)
    w = torch.softmax(torch.tensor([0.3, -1.0, 0.5, 0.0], dtype=torch.float64), 0)
    W = w.expand(B, N)
    loss = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W, BLANK)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    expected = reference_ctc_loss_kd(p_ctc, wav_lens, hyps, lens, w.tolist())
    (expected_grad,) = torch.autograd.grad(expected, logits)
    close(loss, expected)
    close(grad, expected_grad)
    close(loss, reference_ctc_loop(p_ctc, wav_lens, hyps, lens, W))


@pytest.mark.parametrize("blank", [0, 5])
def test_ctc_kd_loss_random_utterance_weights_match_loop(blank):
    B, N, T, V = 3, 4, 20, 6
    hyps, lens, wav_lens = random_batch(B, N, T, V, seed=4)
    if blank != 0:
        hyps = torch.where(hyps == blank, torch.ones_like(hyps), hyps)
    wav_lens[2] = 0.15  # 3 frames: hypotheses of length >= 4 are infeasible (inf)
    lens[2, 1], hyps[2, 1, :5] = 5, torch.tensor([1, 2, 3, 4, 1])
    logits = student_log_probs(B, T, V, seed=5)
    p_ctc = logits.log_softmax(-1)
    generator = torch.Generator().manual_seed(6)
    W = torch.softmax(torch.randn(B, N, generator=generator, dtype=torch.float64), 1)
    W[0, 1] = 0.0
    W[0] /= W[0].sum()
    loss = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W, blank)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    expected = reference_ctc_loop(p_ctc, wav_lens, hyps, lens, W, blank)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    close(loss, expected)
    close(grad, expected_grad)
    assert torch.isfinite(grad).all()


def test_ctc_kd_loss_float32_batch():
    B, N, T, V = 3, 4, 20, 6
    hyps, lens, wav_lens = random_batch(B, N, T, V, seed=7)
    logits = student_log_probs(B, T, V, seed=8, dtype=torch.float32)
    p_ctc = logits.log_softmax(-1)
    ctc_per = torch.tensor([[10.0, 12.0, 30.0, 11.0]] * B)
    W, _ = strategy_weights("weighted", ctc_per, ctc_per, weight_temperature=4.0)
    loss = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W, BLANK)
    expected = reference_ctc_loop(p_ctc, wav_lens, hyps, lens, W)
    torch.testing.assert_close(loss, expected)


# ------------------------------------------------------------------ seq loss


def seq_batch(B, N, L1, V, seed, temperature=2.0):
    """Student p_seq [B, L1, V], teachers' att_dist [B, N, L1, V], eos_lens [B]."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L1, V, generator=generator, dtype=torch.float64)
    logits.requires_grad_()
    teacher = torch.randn(B, N, L1, V, generator=generator, dtype=torch.float64)
    att_dist = torch.softmax(teacher / temperature, dim=-1)
    steps = torch.randint(2, L1 + 1, (B,), generator=generator)
    steps[0] = L1
    att_dist = att_dist * (torch.arange(L1) < steps[:, None])[:, None, :, None]
    return logits, att_dist, steps / L1, steps


def test_nll_loss_kd_is_linear_in_the_target():
    logits, att_dist, eos_lens, _ = seq_batch(3, 2, 7, 5, seed=9)
    p_seq = logits.log_softmax(-1)
    mixed = 0.3 * att_dist[:, 0] + 0.7 * att_dist[:, 1]
    close(
        nll_loss_kd(p_seq, mixed, eos_lens),
        0.3 * nll_loss_kd(p_seq, att_dist[:, 0], eos_lens)
        + 0.7 * nll_loss_kd(p_seq, att_dist[:, 1], eos_lens),
    )


def test_seq_kd_loss_batch_weights_match_nll_loss_kd_sum():
    logits, att_dist, eos_lens, _ = seq_batch(3, 4, 7, 5, seed=10)
    p_seq = logits.log_softmax(-1)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    loss = seq_kd_loss(p_seq, att_dist, w.expand(3, 4), eos_lens)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    expected = sum(
        w[k] * nll_loss_kd(p_seq, att_dist[:, k], eos_lens) for k in range(4)
    )
    (expected_grad,) = torch.autograd.grad(expected, logits)
    close(loss, expected)
    close(grad, expected_grad)


def test_seq_kd_loss_best_matches_recipe_selection():
    logits, att_dist, eos_lens, _ = seq_batch(3, 4, 7, 5, seed=11)
    p_seq = logits.log_softmax(-1)
    att_per = torch.tensor([[20.0, 10.0, 10.0, 30.0], [5.0, 9.0, 8.0, 7.0]] * 2)[:3]
    _, W = strategy_weights("best", att_per, att_per)
    # the original recipe: stack, per utterance, the best teacher's distribution
    best = torch.stack([att_dist[0, 1], att_dist[1, 0], att_dist[2, 1]])
    close(seq_kd_loss(p_seq, att_dist, W, eos_lens), nll_loss_kd(p_seq, best, eos_lens))


def test_seq_kd_loss_utterance_weights_match_loop():
    B, N, L1, V = 3, 4, 7, 5
    logits, att_dist, eos_lens, steps = seq_batch(B, N, L1, V, seed=12)
    p_seq = logits.log_softmax(-1)
    generator = torch.Generator().manual_seed(13)
    W = torch.softmax(torch.randn(B, N, generator=generator, dtype=torch.float64), 1)
    total = 0.0
    for b in range(B):
        for k in range(N):
            for t in range(int(steps[b])):
                cross_entropy = -(att_dist[b, k, t] * p_seq[b, t]).sum()
                total = total + W[b, k] * cross_entropy
    expected = total / steps.sum()
    close(seq_kd_loss(p_seq, att_dist, W, eos_lens), expected)


# ------------------------------------------------------------------- objective


def test_kd_objective_by_hand():
    # loss_ctc = 2^2 * 0.5 * 1.5 + 0.5 * 2.0 = 3.0 + 1.0 = 4.0
    # loss_seq = 2^2 * 0.5 * 0.8 + 0.5 * 1.2 = 1.6 + 0.6 = 2.2
    # total = 0.3 * 4.0 + 0.7 * 2.2 = 1.2 + 1.54 = 2.74
    total, parts = kd_objective(
        kd_ctc=1.5,
        kd_seq=0.8,
        sup_ctc=2.0,
        sup_seq=1.2,
        alpha=0.5,
        temperature=2.0,
        ctc_weight=0.3,
    )
    assert total == pytest.approx(2.74)
    assert parts == pytest.approx(
        {
            "kd_ctc": 1.5,
            "kd_seq": 0.8,
            "sup_ctc": 2.0,
            "sup_seq": 1.2,
            "loss_ctc": 4.0,
            "loss_seq": 2.2,
        }
    )
    # alpha = 0: the supervised objective alone, whatever T
    total, _ = kd_objective(1.5, 0.8, 2.0, 1.2, 0.0, 3.0, 0.3)
    assert total == pytest.approx(0.3 * 2.0 + 0.7 * 1.2)
    # attention branch alone: loss_ctc = sup_ctc = 2.0, loss_seq = 2.2 as above
    # total = 0.3 * 2.0 + 0.7 * 2.2 = 0.6 + 1.54 = 2.14
    total, parts = kd_objective(1.5, 0.8, 2.0, 1.2, 0.5, 2.0, 0.3, distill_ctc=False)
    assert total == pytest.approx(2.14)
    assert parts["loss_ctc"] == 2.0 and parts["loss_seq"] == pytest.approx(2.2)


def test_branch_losses_by_hand():
    # as test_kd_objective_by_hand: loss_ctc 4.0, loss_seq 2.2
    assert branch_losses(1.5, 0.8, 2.0, 1.2, 0.5, 2.0) == pytest.approx((4.0, 2.2))
    # attention branch alone: loss_ctc = sup_ctc
    got = branch_losses(1.5, 0.8, 2.0, 1.2, 0.5, 2.0, distill_ctc=False)
    assert got == pytest.approx((2.0, 2.2))


def test_pooled_mean_weighs_each_group_by_its_normaliser():
    # 2 labelled utterances of 10 tokens with loss 3, 2 unlabelled of 11 with
    # loss 1: per utterance (2 * 3 + 2 * 1) / 4 = 2; per token
    # (10 * 3 + 11 * 1) / 21 = 41 / 21
    assert pooled_mean([3.0, 1.0], [2, 2]) == pytest.approx(2.0)
    assert pooled_mean([3.0, 1.0], [10, 11]) == pytest.approx(41 / 21)
    assert pooled_mean([5.0], [7]) == 5.0  # one group: itself, exactly
    # The mean over a batch equals the pooled means over its groups.
    per_token = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    pooled = pooled_mean([per_token[:2].mean(), per_token[2:].mean()], [2, 3])
    close(pooled, per_token.mean(), rtol=1e-6)
    # Gradients flow into every group.
    values = torch.tensor([3.0, 1.0], requires_grad=True)
    pooled_mean([values[0], values[1]], [1, 3]).backward()
    close(values.grad, [0.25, 0.75])


# One utterance, one frame / decoder step, two labels, at T = 2. Teacher logits
# [2, 0] stored at T = 2: softmax([1, 0]) = [e, 1] / (e + 1) = [0.7310586, 0.2689414].
# Student logits [ln 3, 0]: probabilities [0.75, 0.25] at T = 1, and at T = 2
# softmax([ln 3 / 2, 0]) = [sqrt 3, 1] / (sqrt 3 + 1) = [0.6339746, 0.3660254].
T2_TEACHER = [math.e / (math.e + 1), 1 / (math.e + 1)]
T2_STUDENT_LOGITS = [math.log(3.0), 0.0]


@pytest.mark.parametrize(
    "soften, seq_ce, ctc_nll",
    [
        # the original: student at T = 1.
        # seq: -(0.7310586 ln 0.75 + 0.2689414 ln 0.25) = 0.2103124 + 0.3728320
        # ctc: one frame, target [label 0]: -ln p(0) = -ln 0.75 = 0.2876821
        (False, 0.5831444, 0.2876821),
        # Hinton: student at T = 2.
        # seq: -(0.7310586 ln 0.6339746 + 0.2689414 ln 0.3660254)
        #      = 0.3331773 + 0.2703003
        # ctc: -ln 0.6339746 = 0.4557464
        (True, 0.6034776, 0.4557464),
    ],
)
def test_temperature_two_both_forms_by_hand(soften, seq_ce, ctc_nll):
    logits = torch.tensor([[T2_STUDENT_LOGITS]], dtype=torch.float64)  # [1, 1, 2]
    log_probs = logits.log_softmax(-1)
    p_kd = student_kd_log_probs(log_probs, 2.0, soften)
    att_dist = torch.tensor([[[T2_TEACHER]]], dtype=torch.float64)  # [1, 1, 1, 2]
    one = torch.ones(1, 1, dtype=torch.float64)
    kd_seq = seq_kd_loss(p_kd, att_dist, one, torch.ones(1))
    close(kd_seq, seq_ce, rtol=1e-6)
    # CTC: blank is label 1, the teacher's hypothesis is [label 0]
    hyps, hyp_lens = torch.tensor([[[0]]]), torch.tensor([[1]])
    kd_ctc = ctc_kd_loss(p_kd, torch.ones(1), hyps, hyp_lens, one, blank_index=1)
    close(kd_ctc, ctc_nll, rtol=1e-6)
    # Both forms scale the KD terms by T^2 = 4 (alpha 1: no supervised part).
    total, parts = kd_objective(kd_ctc, kd_seq, 9.0, 9.0, 1.0, 2.0, 0.5)
    close(parts["loss_seq"], 4 * seq_ce, rtol=1e-6)
    close(parts["loss_ctc"], 4 * ctc_nll, rtol=1e-6)
    close(total, 2 * (seq_ce + ctc_nll), rtol=1e-6)


def test_student_kd_log_probs_untouched_unless_softened():
    log_probs = torch.randn(2, 3, 5).log_softmax(-1)
    assert student_kd_log_probs(log_probs, 2.0) is log_probs  # the original
    assert student_kd_log_probs(log_probs, 1.0, soften_student=True) is log_probs
    softened = student_kd_log_probs(log_probs, 2.0, soften_student=True)
    # the same as softening the logits: log_probs differ from logits by a constant
    logits = log_probs + 3.7
    close(softened, torch.log_softmax(logits / 2.0, -1), rtol=1e-6, atol=1e-7)
    close(softened.exp().sum(-1), torch.ones(2, 3), rtol=1e-6)


def test_gradients_flow_through_the_objective():
    B, N, T, V, L1 = 3, 4, 20, 6, 7
    hyps, lens, wav_lens = random_batch(B, N, T, V, seed=14)
    ctc_logits = student_log_probs(B, T, V, seed=15, dtype=torch.float32)
    seq_logits, att_dist, eos_lens, _ = seq_batch(B, N, L1, V, seed=16)
    seq_logits = seq_logits.detach().float().requires_grad_()
    p_ctc, p_seq = ctc_logits.log_softmax(-1), seq_logits.log_softmax(-1)
    per = torch.tensor([[10.0, 20.0, 15.0, 12.0]] * B)
    W_ctc, W_seq = strategy_weights("weighted", per, per, "utterance", 5.0)
    kd_ctc = ctc_kd_loss(p_ctc, wav_lens, hyps, lens, W_ctc, BLANK)
    kd_seq = seq_kd_loss(p_seq, att_dist.float(), W_seq, eos_lens)
    total, parts = kd_objective(kd_ctc, kd_seq, 1.0, 2.0, 0.5, 2.0, 0.3)
    total.backward()
    for grad in (ctc_logits.grad, seq_logits.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not parts["loss_ctc"].requires_grad
