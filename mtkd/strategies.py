"""Multi-teacher distillation strategies and the KD losses, as pure tensor functions.

Every strategy of Gao, Parcollet & Lane (2020, arXiv 2005.09310) is written as a
pair of weight matrices ``W_ctc``, ``W_seq`` of shape [B, N] (B utterances, N
teachers; each row sums to 1), and both KD losses are weighted sums

    kd = mean_b sum_k W[b, k] * l[b, k]

where ``l[b, k]`` is utterance b's loss term against teacher k, normalised so
that with batch-scope weights (all rows equal to w) ``kd`` is exactly
``sum_k w_k * L_k``, ``L_k`` being SpeechBrain 1.1.2's ``ctc_loss_kd`` or
``nll_loss_kd`` against teacher k alone:

- ``ctc_loss_kd`` calls ``F.ctc_loss(..., reduction="mean", zero_infinity=True)``
  with input lengths ``round(wav_lens * T)``: an infinite (infeasible) loss
  becomes 0, each utterance's loss is divided by its target length clamped to
  at least 1, and the quotients are averaged over the B utterances. Hence
  ``l[b, k] = ctc(b, hyp[b, k]) / max(len(hyp[b, k]), 1)``.
- ``nll_loss_kd`` sums ``-sum_v target * log p`` over the first
  ``round(eos_lens * (L+1))`` positions of every utterance and divides by the
  total number of those positions in the batch. The divisor depends only on the
  lengths, never on the target, so the loss is linear in the target: one call
  against the mixed target ``sum_k W[b, k] * att_dist[b, k]`` equals the
  W-weighted sum of the N per-teacher losses (``seq_kd_loss``).

Strategies (``strategy_weights``): "average" (1/N everywhere), "best" (CTC:
softmax over teachers of 100 - PER; seq: per utterance, the teacher with the
lowest attention PER), "weighted" (both losses: softmax of 100 - PER) and the
first author's fourth, "top-k" (CTC as "best"; seq: per utterance, the mean
over every teacher tied at the lowest attention PER; github.com/yan-gao-GY/
Muti-teacherKD). Two
additions reduce to the paper with their defaults: ``scope="utterance"``
(softmax of each utterance's own PERs instead of the batch-mean PER) and
``weight_temperature`` tau (softmax of (100 - PER) / tau; tau = 1 is the paper,
whose weights are near one-hot as soon as teachers differ by a few points).

Cost model, per batch (B utterances, N teachers, T frames, V labels, H the
longest hypothesis, L+1 decoder steps):

- ``ctc_kd_loss``: one ``F.ctc_loss`` call over M <= B*N (utterance, teacher)
  pairs, M = number of *distinct* hypotheses per utterance whose summed weight
  is above ``MIN_CTC_WEIGHT``. Time and memory O(M * T * (2H+1)) for the CTC
  lattice plus an O(M * T * V) copy of the student's log-probabilities (and its
  gradient); the pair merge is a ``torch.unique`` over B*N rows of H+2 ints.
  Teachers that agree on an utterance, or that the weights switch off (the
  paper's near one-hot softmax, "best"), cost nothing.
- ``seq_kd_loss``: one pass over ``att_dist`` to mix the targets, O(B*N*(L+1)*V),
  then a single cross-entropy O(B*(L+1)*V), instead of N of them.
- The weight functions are O(B*N); ``kd_objective`` is scalar arithmetic.

A batch of labelled and unlabelled audio has one objective per kind of row
(``alpha``, ``unlabelled_alpha``). ``pooled_mean`` weighs each kind's branch
losses by its own normaliser, utterances for CTC, tokens for attention, so
the batch's loss is what one loss over all its rows would be.

Temperature T (``student_kd_log_probs``): the original recipe stores the
teachers' distributions at T, leaves the student at T = 1 and multiplies the KD
terms by T^2 (the default). ``soften_student`` gives Hinton et al.'s form,
where the student's distributions in the KD terms are at T as well.
"""

import torch
import torch.nn.functional as F

STRATEGIES = ("average", "best", "weighted", "top-k")
WEIGHT_SCOPES = ("batch", "utterance")

# Distinct CTC targets whose (merged) weight is <= this are not computed: such a
# weight "rounds to zero" in float32. A dropped target changes the batch loss by
# at most MIN_CTC_WEIGHT * l / B (its gradient likewise), l its per-token CTC
# loss, of the same order as the loss itself; 1e-8 is below float32's relative
# rounding (6e-8), so the loss moves by less than its own rounding error
# (measured on bench/kd_step.py's teachers: at most 9e-8 relative, loss and
# gradient). With tau = 1 a softmax weight falls below 1e-8 for a teacher about
# 18 PER points behind the best one; "best" one-hot rows and float32 underflow
# give exact zeros, always dropped. Raising it further (1e-6: 4e-6 relative
# error) would trade exactness for speed; it is not done.
MIN_CTC_WEIGHT = 1e-8


def softmax_weights(per, scope="batch", weight_temperature=1.0):
    """Teacher weights softmax_k((100 - PER) / tau), from batch or utterance PERs.

    Arguments
    ---------
    per : torch.Tensor
        [B, N] per-utterance error rates of each teacher, in percent.
    scope : str
        "batch" (the paper): one weight vector from each teacher's mean PER over
        the batch, repeated on every row. "utterance": W[b] from per[b] alone.
    weight_temperature : float
        tau > 0; 1 is the paper.

    Returns
    -------
    torch.Tensor
        [B, N] weights, rows summing to 1 (all rows equal for "batch").
    """
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"weight scope {scope!r}: expected one of {WEIGHT_SCOPES}")
    if not weight_temperature > 0:
        raise ValueError(f"weight_temperature must be > 0, got {weight_temperature}")
    per = per.float()
    if scope == "batch":
        scores = (100.0 - per.mean(dim=0, keepdim=True)).expand_as(per)
    else:
        scores = 100.0 - per
    return torch.softmax(scores / weight_temperature, dim=1)


def best_teacher_weights(per):
    """One-hot rows on the teacher with the lowest PER (ties: lowest index).

    Arguments
    ---------
    per : torch.Tensor
        [B, N] per-utterance error rates of each teacher.

    Returns
    -------
    torch.Tensor
        [B, N] float32, exactly one 1 per row.
    """
    is_min = per == per.min(dim=1, keepdim=True).values
    first = is_min & (is_min.cumsum(dim=1) == 1)
    return first.float()


def tied_best_weights(per):
    """Rows spread evenly over every teacher tied at the lowest PER ("top-k").

    Arguments
    ---------
    per : torch.Tensor
        [B, N] per-utterance error rates of each teacher (ties: exactly equal).

    Returns
    -------
    torch.Tensor
        [B, N] float32: 1/k on the k teachers with the row's minimum, 0 elsewhere.
    """
    is_min = (per == per.min(dim=1, keepdim=True).values).float()
    return is_min / is_min.sum(dim=1, keepdim=True)


def strategy_weights(strategy, ctc_per, att_per, scope="batch", weight_temperature=1.0):
    """Weight matrices of a distillation strategy, for the CTC and the seq loss.

    Arguments
    ---------
    strategy : str
        "average", "best", "weighted" or "top-k".
    ctc_per : torch.Tensor
        [B, N] teachers' CTC (greedy) PER on each utterance, percent.
    att_per : torch.Tensor
        [B, N] teachers' attention-decoder PER on each utterance, percent.
    scope, weight_temperature
        As ``softmax_weights`` (ignored by "average" and by the seq side of
        "best" and "top-k", which are per utterance by definition).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        W_ctc [B, N], W_seq [B, N], float32, rows summing to 1.
    """
    if strategy == "average":
        n_teachers = ctc_per.shape[1]
        uniform = torch.full(ctc_per.shape, 1.0 / n_teachers, device=ctc_per.device)
        return uniform, uniform.clone()
    if strategy == "best":
        w_ctc = softmax_weights(ctc_per, scope, weight_temperature)
        return w_ctc, best_teacher_weights(att_per)
    if strategy == "weighted":
        w_ctc = softmax_weights(ctc_per, scope, weight_temperature)
        return w_ctc, softmax_weights(att_per, scope, weight_temperature)
    if strategy == "top-k":
        w_ctc = softmax_weights(ctc_per, scope, weight_temperature)
        return w_ctc, tied_best_weights(att_per)
    raise ValueError(f"unknown KD strategy {strategy!r}: expected one of {STRATEGIES}")


def merge_ctc_targets(ctc_hyps, ctc_hyp_lens, W, min_weight=MIN_CTC_WEIGHT):
    """The distinct (utterance, hypothesis) CTC targets and their summed weights.

    Teachers of one utterance with identical hypotheses (same length, same
    tokens within it) become one target carrying the sum of their weights;
    targets whose weight is then <= ``min_weight`` are dropped (zero weights
    before the merge, which costs a ``torch.unique`` over the B*N rows).

    Arguments
    ---------
    ctc_hyps : torch.Tensor
        [B, N, Hmax] int64 hypotheses, padded (padding values are ignored).
    ctc_hyp_lens : torch.Tensor
        [B, N] int64 absolute hypothesis lengths (0 allowed).
    W : torch.Tensor
        [B, N] teacher weights.
    min_weight : float
        Threshold, see ``MIN_CTC_WEIGHT``.

    Returns
    -------
    (utt [M], hyps [M, H], lens [M], weights [M])
        int64 utterance indices, zero-padded hypotheses (H >= 1), their lengths
        and float weights, M <= B*N, in sorted (utterance, length, tokens) order.
    """
    B, N, _ = ctc_hyps.shape
    lens = ctc_hyp_lens.long()
    width = max(int(lens.max()) if lens.numel() else 0, 1)
    hyps = F.pad(ctc_hyps.long(), (0, max(width - ctc_hyps.shape[2], 0)))
    hyps = hyps[..., :width]
    inside = torch.arange(width, device=hyps.device) < lens.unsqueeze(-1)
    hyps = hyps.masked_fill(~inside, 0)
    utt = torch.arange(B, device=hyps.device).unsqueeze(1).expand(B, N)
    nonzero = W > 0
    keys = torch.cat(
        [utt[nonzero].unsqueeze(1), lens[nonzero].unsqueeze(1), hyps[nonzero]], dim=1
    )
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    weights = W.new_zeros(unique.shape[0]).index_add_(0, inverse, W[nonzero])
    keep = weights > min_weight
    unique, weights = unique[keep], weights[keep]
    return unique[:, 0], unique[:, 2:], unique[:, 1], weights


def ctc_kd_loss(
    p_ctc, wav_lens, ctc_hyps, ctc_hyp_lens, W, blank_index, min_weight=MIN_CTC_WEIGHT
):
    """CTC distillation loss against N teachers' greedy hypotheses, in one call.

    Equals mean_b sum_k W[b, k] * l[b, k], l[b, k] = ctc / max(len, 1) with
    infinite losses zeroed; with batch-scope weights w this is
    sum_k w_k * ctc_loss_kd(p_ctc, teacher k, wav_lens) (see module docstring).

    Arguments
    ---------
    p_ctc : torch.Tensor
        [B, T, V] student CTC log-probabilities.
    wav_lens : torch.Tensor
        [B] relative lengths in (0, 1]; frames used: round(wav_lens * T).
    ctc_hyps : torch.Tensor
        [B, N, Hmax] int64 teachers' greedy CTC hypotheses (no blanks), padded.
    ctc_hyp_lens : torch.Tensor
        [B, N] int64 absolute lengths; 0 is the all-blank path.
    W : torch.Tensor
        [B, N] teacher weights (``strategy_weights``).
    blank_index : int
        Index of the CTC blank among the V labels.
    min_weight : float
        Distinct targets whose summed weight is <= this are skipped
        (``MIN_CTC_WEIGHT``; 0 skips exact zeros only).

    Returns
    -------
    torch.Tensor
        Scalar loss, differentiable w.r.t. ``p_ctc``.
    """
    B, T, _ = p_ctc.shape
    utt, hyps, hyp_lens, weights = merge_ctc_targets(
        ctc_hyps, ctc_hyp_lens, W, min_weight
    )
    if utt.numel() == 0:
        return (p_ctc[:0].sum() * 0.0).reshape(())
    input_lens = torch.round(wav_lens * T).long()
    losses = F.ctc_loss(
        p_ctc.index_select(0, utt).transpose(0, 1),
        hyps,
        input_lens.index_select(0, utt),
        hyp_lens,
        blank=blank_index,
        reduction="none",
        zero_infinity=True,
    )
    per_token = losses / hyp_lens.clamp_min(1).to(losses.dtype)
    return (weights.to(losses.dtype) * per_token).sum() / B


def seq_kd_loss(p_seq, att_dist, W, eos_lens):
    """Attention distillation loss: ``nll_loss_kd`` against the W-mixed target.

    Equals sum_k W-weighted ``nll_loss_kd(p_seq, att_dist[:, k], eos_lens)`` for
    batch-scope weights, and its per-utterance generalisation otherwise:
    sum_b sum_k W[b, k] * sum_{t < len_b} CE[b, k, t] / sum_b len_b.

    Arguments
    ---------
    p_seq : torch.Tensor
        [B, L+1, V] student decoder log-probabilities (teacher-forced).
    att_dist : torch.Tensor
        [B, N, L+1, V] teachers' decoder distributions, zero-padded.
    W : torch.Tensor
        [B, N] teacher weights.
    eos_lens : torch.Tensor
        [B] relative label lengths; positions used: round(eos_lens * (L+1)).

    Returns
    -------
    torch.Tensor
        Scalar loss, differentiable w.r.t. ``p_seq``.
    """
    target = torch.einsum("bn,bnlv->blv", W.to(att_dist.dtype), att_dist)
    lengths = torch.round(eos_lens * target.shape[1]).long()
    steps = torch.arange(p_seq.shape[1], device=p_seq.device)
    mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).float()
    cross_entropy = -(target * p_seq).sum(dim=-1)
    return (cross_entropy * mask).sum() / mask.sum()


def student_kd_log_probs(log_probs, temperature, soften_student=False):
    """The student's log-probabilities as the KD terms see them.

    Arguments
    ---------
    log_probs : torch.Tensor
        [..., V] student log-probabilities at T = 1 (CTC or decoder head).
    temperature : float
        T, the temperature of the stored teacher distributions.
    soften_student : bool
        False (the original recipe): the student stays at T = 1, whatever T.
        True (Hinton et al., 2015): log_softmax(log_probs / T), which equals
        log_softmax(logits / T) since log_probs = logits - logsumexp(logits).

    Returns
    -------
    torch.Tensor
        [..., V] log-probabilities (``log_probs`` itself unless softened).
    """
    if not soften_student or temperature == 1:
        return log_probs
    return torch.log_softmax(log_probs / temperature, dim=-1)


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def branch_losses(
    kd_ctc, kd_seq, sup_ctc, sup_seq, alpha, temperature, distill_ctc=True
):
    """The two branches of the student's objective, before ``ctc_weight``.

    loss_ctc = T^2 * alpha * kd_ctc + (1 - alpha) * sup_ctc (just sup_ctc
    without ``distill_ctc``), loss_seq = T^2 * alpha * kd_seq + (1 - alpha) *
    sup_seq. Arguments as ``kd_objective``; returns (loss_ctc, loss_seq),
    scalars with their gradients.
    """
    kd_scale = temperature**2 * alpha
    if distill_ctc:
        loss_ctc = kd_scale * kd_ctc + (1 - alpha) * sup_ctc
    else:
        loss_ctc = sup_ctc
    return loss_ctc, kd_scale * kd_seq + (1 - alpha) * sup_seq


def kd_objective(
    kd_ctc, kd_seq, sup_ctc, sup_seq, alpha, temperature, ctc_weight, distill_ctc=True
):
    """Combines KD and supervised losses into the student's training objective.

    loss_ctc = T^2 * alpha * kd_ctc + (1 - alpha) * sup_ctc, loss_seq likewise,
    total = ctc_weight * loss_ctc + (1 - ctc_weight) * loss_seq. Without
    ``distill_ctc`` the CTC branch learns from the reference alone
    (loss_ctc = sup_ctc, as without distillation) and only the attention
    branch is distilled.

    Arguments
    ---------
    kd_ctc, kd_seq : torch.Tensor or float
        Scalar KD losses (``ctc_kd_loss``, ``seq_kd_loss``).
    sup_ctc, sup_seq : torch.Tensor or float
        Scalar supervised losses against the reference transcription.
    alpha : float
        Weight of the KD losses against the supervised ones, in [0, 1].
    temperature : float
        T, the temperature the teachers' distributions were stored with.
    ctc_weight : float
        Weight of the CTC side against the attention side, in [0, 1].
    distill_ctc : bool
        False: ``kd_ctc`` is ignored and the CTC side is supervised only.

    Returns
    -------
    (total, parts)
        ``total`` the scalar to back-propagate; ``parts`` a dict of detached
        values for logging: kd_ctc, kd_seq, sup_ctc, sup_seq, loss_ctc, loss_seq.
    """
    loss_ctc, loss_seq = branch_losses(
        kd_ctc, kd_seq, sup_ctc, sup_seq, alpha, temperature, distill_ctc
    )
    total = ctc_weight * loss_ctc + (1 - ctc_weight) * loss_seq
    parts = {
        "kd_ctc": kd_ctc,
        "kd_seq": kd_seq,
        "sup_ctc": sup_ctc,
        "sup_seq": sup_seq,
        "loss_ctc": loss_ctc,
        "loss_seq": loss_seq,
    }
    return total, {name: _detached(value) for name, value in parts.items()}


def pooled_mean(values, counts):
    """The mean over a batch of losses computed on its groups of rows.

    A loss that is a mean over a batch's rows (CTC: over utterances) or over
    its tokens (attention: over decoder positions), computed on each group of
    rows alone, gives the whole batch's loss once each is weighted by its
    group's own normaliser: sum_g counts_g * values_g / sum_g counts_g.

    Arguments
    ---------
    values : list of G scalars (tensors or floats), one loss per group.
    counts : list of G numbers, each group's normaliser (utterances for a
        per-utterance mean, tokens for a per-token mean), at least one > 0.

    Returns
    -------
    Scalar of the values' type (differentiable through tensor values).
    """
    total = sum(float(c) for c in counts)
    return sum(
        value * (float(c) / total) for value, c in zip(values, counts, strict=True)
    )


def weight_entropy(W):
    """Mean over rows of the entropy of the teacher weights, in nats.

    0 for one-hot rows, ln N for uniform rows (divide by ln 2 for bits).

    Arguments
    ---------
    W : torch.Tensor
        [B, N] weights, rows summing to 1.

    Returns
    -------
    float
    """
    W = W.detach().double()
    return float(-torch.xlogy(W, W).sum(dim=1).mean())


def mean_teacher_weights(W):
    """Mean weight of each teacher over the batch's rows: [N] list of floats."""
    return W.detach().double().mean(dim=0).tolist()


def weight_stats(W):
    """One batch's teacher weights [B, N] summarised (the weights log's keys):
    ``mean_weight_per_teacher`` [N] floats, ``entropy_nats`` (mean over rows)
    and ``mean_top_weight`` (mean over rows of the largest weight)."""
    return {
        "mean_weight_per_teacher": mean_teacher_weights(W),
        "entropy_nats": weight_entropy(W),
        "mean_top_weight": float(W.detach().double().max(dim=1).values.mean()),
    }
