"""Stage 3 pieces: teacher targets in the data pipeline, checks, the KD Brain.

Teacher targets are read from the store by utterance ID inside the data
pipeline (so DataLoader workers prefetch them and any batch size, order,
sampler or augmentation works) and padded by ``KDBatch``. ``KDBrain`` is the
teacher's ``ASRBrain`` with one change: on training batches the objective mixes
the supervised losses with the distillation losses of ``mtkd.strategies``.
"""

import json
import math
import os
from types import SimpleNamespace

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import ddp_broadcast, if_main_process

from mtkd import RecipeError
from mtkd.brain import ASRBrain, Predictions
from mtkd.runs import best_checkpoint_model_path
from mtkd.store import collate_teacher_targets
from mtkd.store.format import (
    UNLABELLED,
    manifest_info,
    read_part_header,
    unlabelled_part_files,
)
from mtkd.strategies import (
    branch_losses,
    ctc_kd_loss,
    pooled_mean,
    seq_kd_loss,
    strategy_weights,
    student_kd_log_probs,
    weight_stats,
)

TEACHER_KEY = "teacher"
UNLABELLED_KEY = "unlabelled"


class KDBatch(PaddedBatch):
    """A PaddedBatch plus ``.teacher``: the store's targets, padded (see
    ``collate_teacher_targets``: ``ctc_hyps`` [B, N, H], ``ctc_hyp_lens`` [B, N],
    ``att_dist`` [B, N, L+1, V], ``ctc_per`` / ``att_per`` [B, N]), and
    ``.unlabelled`` [B] bool: which utterances are unlabelled audio, whose
    ``phn_encoded`` is the teachers' consensus."""

    def __init__(self, examples, *args, **kwargs):
        targets = [example.pop(TEACHER_KEY) for example in examples]
        flags = [bool(target.pop(UNLABELLED_KEY, False)) for target in targets]
        super().__init__(examples, *args, **kwargs)
        self.teacher = collate_teacher_targets(targets)
        self.unlabelled = torch.tensor(flags, dtype=torch.bool)

    def to(self, *args, **kwargs):
        moved = super().to(*args, **kwargs)
        moved.teacher = {k: v.to(*args, **kwargs) for k, v in self.teacher.items()}
        moved.unlabelled = self.unlabelled.to(*args, **kwargs)
        return moved

    def pin_memory(self):
        pinned = super().pin_memory()
        pinned.teacher = {k: v.pin_memory() for k, v in self.teacher.items()}
        pinned.unlabelled = self.unlabelled.pin_memory()
        return pinned


def add_teacher_pipeline(train_data, store, split="train", scores="consensus"):
    """Adds the ``teacher`` item (one store lookup per utterance) to ``train_data``.

    ``split`` None: each entry's ``kd_split`` says where its targets are
    (``train``, or ``unlabelled`` for the audio of ``mixed_train_manifest``);
    ``scores``: which teacher PERs the unlabelled utterances give the
    strategy (``TeacherStore.get``).
    """
    if split is None:

        @sb.utils.data_pipeline.takes("id", "kd_split")
        @sb.utils.data_pipeline.provides(TEACHER_KEY)
        def mixed_pipeline(utt_id, kd_split):
            return {
                **store.get(kd_split, utt_id, scores),
                UNLABELLED_KEY: kd_split == UNLABELLED,
            }

        sb.dataio.dataset.add_dynamic_item([train_data], mixed_pipeline)
        return

    @sb.utils.data_pipeline.takes("id")
    @sb.utils.data_pipeline.provides(TEACHER_KEY)
    def teacher_pipeline(utt_id):
        return store.get(split, utt_id)

    sb.dataio.dataset.add_dynamic_item([train_data], teacher_pipeline)


def check_unlabelled_store(store, hparams):
    """The unlabelled utterances of this run, each with its pseudo-reference
    and the teachers' disagreement on it: ({utt_id: [L] label ids}, {utt_id:
    disagreement %} or None). Stops if the store has no unlabelled part,
    has one written for another pool, lacks one of the manifest's
    utterances, or cannot give what ``unlabelled_scores`` and
    ``unlabelled_max_disagreement`` ask for."""
    where = hparams["tea_infer_dir"]
    if not store.has_unlabelled:
        if os.path.isfile(store.path):
            raise RecipeError(_one_file_message(store, hparams))
        raise RecipeError(
            f"unlabelled is set ({hparams['unlabelled']}) but the teacher store "
            f"{where} has no unlabelled part: write it with save_teachers.py "
            f"--unlabelled {hparams['unlabelled']} (same teacher list and "
            "store folder; its labelled parts are reused)."
        )
    with open(hparams["unlabelled_annotation"], encoding="utf-8") as f:
        wanted = json.load(f)
    info = manifest_info(hparams["unlabelled_annotation"])
    held = set(store.utterance_ids(UNLABELLED))
    if info["fingerprint"] != store.fingerprint(UNLABELLED) and not held >= set(wanted):
        raise RecipeError(_other_pool_message(store, hparams, wanted, info, held))
    store.check_holds(UNLABELLED, wanted)
    refs = {utt_id: store.pseudo_reference(utt_id) for utt_id in wanted}
    threshold = check_unlabelled_options(store, hparams)
    if threshold is None:
        return refs, None
    ids = store.utterance_ids(UNLABELLED)
    spread = dict(
        zip(ids, store.unlabelled_array("disagreement").tolist(), strict=True)
    )
    spread = {utt_id: spread[utt_id] for utt_id in wanted}
    keep_by_disagreement(spread, threshold, list(wanted))  # none kept: stop now
    return refs, spread


def _pool_text(info, source=None):
    """A pool's manifest info as text: 12 utterances (0.01 h) from --unlabelled X."""
    origin = f" from --unlabelled {source}" if source else ""
    return f"{info['n_utt']} utterances ({info['hours']:.2f} h){origin}"


def _other_pool_message(store, hparams, wanted, info, held):
    """An unlabelled part written for another pool: what it holds, what this
    run's pool is, and the ways that keep the other pool's part."""
    where, source = hparams["tea_infer_dir"], hparams["unlabelled"]
    theirs = store.split_info(UNLABELLED)
    common = len(held & set(wanted))
    return (
        f"The unlabelled part {store.unlabelled_part} of the teacher store {where} "
        f"was written for another pool: it holds "
        f"{_pool_text(theirs, theirs.get('source'))}; this run's pool is "
        f"{_pool_text(info, source)}, {common} of them in the part. The store is "
        "not damaged. Give --unlabelled the pool the part was written for, or "
        "write this pool's part in a store folder of its own: copy the labelled "
        f"parts (part-*.h5 and their .sha256 files) of {where} into a new folder "
        f"and run save_teachers.py with --unlabelled {source} --store_folder "
        "NEW_FOLDER (the copied parts are reused), then give train_kd.py "
        "--tea_infer_dir NEW_FOLDER. Do not run save_teachers.py with "
        f"--overwrite True on {where}: it would replace the other pool's part."
    )


def _one_file_message(store, hparams):
    """--tea_infer_dir names one part file (a merged store) and --unlabelled
    is set: the unlabelled part is only ever in a store folder. Says which
    folder the file comes from, and whether its unlabelled part is this
    run's pool."""
    where, source = hparams["tea_infer_dir"], hparams["unlabelled"]
    merged_from = store.meta.get("merged_from") or [store.path]
    folder = os.path.dirname(os.path.abspath(merged_from[0]))
    text = (
        f"--tea_infer_dir {where} is one store file"
        + (" (a merged store)" if store.meta.get("merged_from") else "")
        + ", which holds the labelled splits only: the unlabelled part is read "
        f"from a store folder. The file was made from the store folder {folder}"
    )
    found = unlabelled_part_files(folder) if os.path.isdir(folder) else []
    if not found:
        return (
            f"{text}, which has no unlabelled part: write it there with "
            f"save_teachers.py --unlabelled {source} --store_folder {folder} "
            f"(its labelled parts are reused), then give --tea_infer_dir {folder}."
        )
    meta, _ = read_part_header(found[0])
    theirs = meta["splits"][UNLABELLED]
    info = manifest_info(hparams["unlabelled_annotation"])
    if theirs["fingerprint"] == info["fingerprint"]:
        return (
            f"{text}, whose unlabelled part {found[0]} holds this run's pool "
            f"({_pool_text(info, source)}): give --tea_infer_dir {folder}."
        )
    return (
        f"{text}, whose unlabelled part {found[0]} was written for another pool "
        f"({_pool_text(theirs, theirs.get('source'))}; this run's: "
        f"{_pool_text(info, source)}). Give --unlabelled the pool that part was "
        f"written for and --tea_infer_dir {folder}, or write this pool's part "
        "in a store folder of its own (copy the labelled parts there and run "
        f"save_teachers.py with --unlabelled {source} --store_folder NEW_FOLDER)."
    )


def check_unlabelled_options(store, hparams):
    """Stops unless the store can give what ``unlabelled_scores`` and
    ``unlabelled_max_disagreement`` ask for: scores of format version 3, and
    enough teachers for a consensus of the others (leave-one-out: 3; with 2,
    each would be scored against the other's hypothesis, the same edits for
    both) or for a pair (the disagreement: 2). Returns the threshold."""
    where = hparams["tea_infer_dir"]
    threshold = hparams.get("unlabelled_max_disagreement")
    asked = [
        (key, value, minimum)
        for key, value, minimum in (
            ("unlabelled_scores", hparams.get("unlabelled_scores"), 3),
            ("unlabelled_max_disagreement", threshold, 2),
        )
        if value not in (None, "consensus")
    ]
    for key, value, minimum in asked:
        if store.teacher_count < minimum:
            raise RecipeError(
                f"{key} {value} needs a consensus of at least {minimum} teachers, "
                f"but the teacher store {where} has {store.teacher_count} (teacher "
                f"list {store.meta.get('list_file')}). Add teachers to that list "
                "and write the store again, or leave the option out."
            )
        if not store.has_leave_one_out:
            raise RecipeError(
                f"{key} {value} needs the teachers' leave-one-out scores and "
                f"disagreement, which the unlabelled part of {where} lacks "
                f"(format version {store.unlabelled_meta.get('format_version')})."
                " Write it again: save_teachers.py with the same teacher list, "
                "--unlabelled and --overwrite True."
            )
    return threshold


def mixed_train_manifest(
    train_json, unlabelled_json, pseudo_refs, labels, out_json,
    disagreement=None, max_disagreement=None,
):  # fmt: skip
    """Writes the student's training manifest: train's entries, then the
    unlabelled audio with its consensus as ``phn``; ``kd_split`` says which
    split of the store holds each utterance's targets.

    ``pseudo_refs``: {utt_id: label ids}; ``labels``: the store's labels
    (``labels[i]`` is label id i). An utterance whose consensus is empty (no
    teacher heard a phone) is left out, and so is one whose teachers'
    ``disagreement`` ({utt_id: %}) is above ``max_disagreement`` (None: no
    filter). Returns the counts and hours of each kind, for the run's record.
    """
    with open(train_json, encoding="utf-8") as f:
        entries = {k: {**v, "kd_split": "train"} for k, v in json.load(f).items()}
    with open(unlabelled_json, encoding="utf-8") as f:
        unlabelled = json.load(f)
    kept = keep_by_disagreement(disagreement, max_disagreement, unlabelled)
    seen = {"labelled": _amount(entries.values()), "unlabelled_empty_consensus": 0}
    if max_disagreement is not None:
        dropped = [unlabelled[u] for u in unlabelled if u not in kept]
        seen["unlabelled_max_disagreement"] = max_disagreement
        seen["unlabelled_dropped_disagreement"] = _amount(dropped)
    used = []
    for utt_id, entry in unlabelled.items():
        if utt_id not in kept:
            continue
        ref = [labels[int(i)] for i in pseudo_refs[utt_id]]
        if not ref:
            seen["unlabelled_empty_consensus"] += 1
            continue
        entries[utt_id] = {**entry, "phn": " ".join(ref), "kd_split": UNLABELLED}
        used.append(entries[utt_id])
    seen["unlabelled"] = _amount(used)
    tmp = out_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, out_json)
    return seen


def keep_by_disagreement(disagreement, max_disagreement, utt_ids):
    """The utterances of ``utt_ids`` a disagreement threshold keeps: those
    whose teachers' disagreement ({utt_id: %}) is at most ``max_disagreement``
    (None: all of them). Keeping none is a RecipeError naming the option and
    the lowest disagreement there is."""
    if max_disagreement is None:
        return set(utt_ids)
    kept = {u for u in utt_ids if disagreement[u] <= max_disagreement}
    if utt_ids and not kept:
        lowest = min(disagreement[u] for u in utt_ids)
        raise RecipeError(
            f"unlabelled_max_disagreement {max_disagreement} keeps none of the "
            f"{len(utt_ids)} unlabelled utterances (the teachers' lowest "
            f"disagreement there is {lowest:.2f} %): give a larger value (see "
            "tools/consensus_quality.py --thresholds for what each keeps), or "
            "null for no filter."
        )
    return kept


def epochs_for_unfiltered_updates(epochs, batch_size, labelled, usable, kept):
    """The epochs that give a student trained on ``labelled`` + ``kept`` pool
    utterances as many optimiser updates as ``epochs`` epochs would on
    ``labelled`` + ``usable`` (the pool without the disagreement filter).

    An epoch is ceil(utterances / batch_size) batches; the result is rounded
    to the nearest epoch and never below ``epochs``. For example 30 epochs,
    batch 8, 384 labelled, 384 usable and 161 kept: 30 x 96 = 2,880 updates
    at 69 batches an epoch -> 42 epochs (2,898 updates)."""
    updates = epochs * math.ceil((labelled + usable) / batch_size)
    per_epoch = math.ceil((labelled + kept) / batch_size)
    return max(epochs, round(updates / per_epoch))


def dropped_note(seen):
    """'; N (H h) left out: teachers' disagreement above X %' for the run's
    record, when ``mixed_train_manifest`` filtered by disagreement."""
    if "unlabelled_dropped_disagreement" not in seen:
        return ""
    dropped = seen["unlabelled_dropped_disagreement"]
    return (
        f"; {dropped['utterances']} ({dropped['hours']:.3f} h) left out: "
        f"teachers' disagreement above {seen['unlabelled_max_disagreement']} %"
    )


def _amount(entries):
    entries = list(entries)
    hours = sum(float(e["duration"]) for e in entries) / 3600.0
    return {"utterances": len(entries), "hours": round(hours, 4)}


def verify_store_on_main(store):
    """``store.verify()``, which reads every byte of the store, on the main
    process only. Under DDP the other ranks wait for its verdict: on a
    damaged store the main process raises the StoreError (the run's one
    ``ERROR:`` line) and every other rank stops cleanly (exit status 2) with
    no message of its own, instead of waiting for a rank that has left."""
    failure = None
    if if_main_process():
        try:
            store.verify()
        except Exception as err:  # noqa: BLE001 - the other ranks must hear of it
            failure = err
    verdict = ddp_broadcast(None if failure is None else str(failure), src=0)
    if failure is not None:
        raise failure
    if verdict is not None:
        raise SystemExit(2)


def check_store_matches(store, hparams, label_encoder):
    """Stops before training if the store was made for other data or labels.

    Compares the label set (labels and order), blank/bos/eos, the distillation
    temperature and the train manifest (utterance IDs and phones); the error
    says what differs and what to do.
    """
    where = hparams["tea_infer_dir"]
    verify_store_on_main(store)  # damaged bytes: named now, not mid-epoch
    labels = [label_encoder.ind2lab[i] for i in range(len(label_encoder))]
    if list(store.label_encoder_labels) != labels:
        differ = [
            f"{i}: store {a!r} vs run {b!r}"
            for i, (a, b) in enumerate(
                zip(store.label_encoder_labels, labels, strict=False)
            )
            if a != b
        ][:5]
        raise RecipeError(
            f"The teacher store {where} has another label set than this run "
            f"({len(store.label_encoder_labels)} vs {len(labels)} labels; "
            f"{'; '.join(differ) or 'different length'}). Use the phn_set the "
            "teachers were trained with."
        )
    for key in ("blank_index", "bos_index", "eos_index"):
        if getattr(store, key) != hparams[key]:
            raise RecipeError(
                f"{key} is {hparams[key]} here but {getattr(store, key)} in the "
                f"teacher store {where}: set --{key} {getattr(store, key)}."
            )
    if not hparams["temperature"] > 0:  # an invalid value, not a mismatch
        raise RecipeError(
            f"temperature must be greater than 0, got {hparams['temperature']}: "
            f"set --temperature {store.temperature} (the store's)."
        )
    if abs(store.temperature - hparams["temperature"]) > 1e-9:
        raise RecipeError(
            f"temperature is {hparams['temperature']} here but the store {where} "
            f"holds distributions at temperature {store.temperature}: set "
            f"--temperature {store.temperature} or remake the store."
        )
    store.check_manifest("train", hparams["train_annotation"])


def pretrained_model_path(pretrain_st_dir):
    """The teacher ``model.ckpt`` that ``pretrain_st_dir`` names.

    Accepted: the ``model.ckpt`` file itself; a checkpoint folder holding one
    (``save/CKPT+...``, as the original README's example passes a folder); a
    ``save`` folder or a run's output folder, whose best-valid checkpoint is
    taken. Anything else is a RecipeError saying what to give.
    """
    path = pretrain_st_dir
    if path and os.path.isfile(path):
        return path
    if path and os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.ckpt")):
            return os.path.join(path, "model.ckpt")
        for save_folder in (path, os.path.join(path, "save")):
            has_checkpoints = os.path.isdir(save_folder) and any(
                name.startswith("CKPT+") for name in os.listdir(save_folder)
            )
            if has_checkpoints:
                return best_checkpoint_model_path(save_folder)
    raise RecipeError(
        f"pretrain is True but {pretrain_st_dir} (--pretrain_checkpoint, the "
        "original recipe's --pretrain_st_dir) is neither a teacher model.ckpt "
        "nor a folder holding one (a CKPT+... checkpoint folder, or a "
        "teacher's save/ or output folder): give one with "
        "--pretrain_checkpoint, or set --pretrain False to start the student "
        "from scratch."
    )


def load_pretrained_encoder(model, pretrain_st_dir):
    """Copies a teacher's encoder weights (``enc.*`` of its model.ckpt) into
    ``model.enc``; the two encoders must have the same sizes.
    ``pretrain_st_dir``: see ``pretrained_model_path``."""
    model_ckpt = pretrained_model_path(pretrain_st_dir)
    state = torch.load(model_ckpt, map_location="cpu")
    encoder = {k[len("enc.") :]: v for k, v in state.items() if k.startswith("enc.")}
    try:
        model.enc.load_state_dict(encoder)
    except RuntimeError as err:
        raise RecipeError(
            f"The encoder in {model_ckpt} does not fit the student's encoder "
            "(different sizes). Give the student the teacher's encoder sizes, or "
            f"set --pretrain False. Details: {str(err).splitlines()[0]}"
        ) from err


class KDBrain(ASRBrain):
    """ASRBrain whose training objective adds multi-teacher distillation."""

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.weight_sums = {}

    def compute_objectives(self, predictions, batch, stage):
        if stage == sb.Stage.TRAIN and _is_mixed(batch):
            # Each row's supervised losses once: per kind of row, and the
            # logged whole-batch values pooled from them (``mixed_objective``).
            total, sup_ctc, sup_seq = self.mixed_objective(predictions, batch)
            self.log_loss_part("ctc_loss", sup_ctc)
            self.log_loss_part("seq_loss", sup_seq)
            return total
        return super().compute_objectives(predictions, batch, stage)

    def combine_losses(self, loss_ctc, loss_seq, predictions, batch, stage):
        if stage != sb.Stage.TRAIN:
            return super().combine_losses(loss_ctc, loss_seq, predictions, batch, stage)
        if _is_mixed(batch):
            return self.mixed_objective(predictions, batch)[0]
        _, eos_lens = batch.phn_encoded_eos
        ctc, seq = self._objective(
            loss_ctc, loss_seq, predictions, batch.teacher, eos_lens, self.hparams.alpha
        )
        return self.hparams.ctc_weight * ctc + (1 - self.hparams.ctc_weight) * seq

    def mixed_objective(self, predictions, batch):
        """A batch with unlabelled audio: (objective, supervised CTC loss,
        supervised attention loss) of the whole batch.

        Its labelled and its unlabelled rows each get their own objective
        (``alpha``, ``unlabelled_alpha``; a strategy's batch weights from each
        kind's own PERs), computed on those rows alone; each branch is then
        pooled with its own normaliser (``pooled_mean``: utterances for CTC,
        tokens for attention), so that the batch's loss is the mean over all
        its rows (utterances, tokens) of each row's own objective. Slicing
        keeps the padded widths, so the relative lengths stay valid.
        """
        hp = self.hparams
        width = batch.phn_encoded_eos[0].shape[1]
        groups = {"ctc": [], "seq": [], "sup_ctc": [], "sup_seq": []}
        utterances, tokens = [], []
        for mask, alpha in (
            (~batch.unlabelled, hp.alpha),
            (batch.unlabelled, hp.unlabelled_alpha),
        ):
            index = mask.nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            part = Predictions(
                predictions.p_ctc.index_select(0, index),
                predictions.p_seq.index_select(0, index),
                predictions.wav_lens.index_select(0, index),
                None,
            )
            labels = SimpleNamespace(
                phn_encoded=_rows(batch.phn_encoded, index),
                phn_encoded_eos=_rows(batch.phn_encoded_eos, index),
            )
            sup_ctc, sup_seq = self.supervised_losses(part, labels)
            teacher = {k: v.index_select(0, index) for k, v in batch.teacher.items()}
            eos_lens = labels.phn_encoded_eos[1]
            ctc, seq = self._objective(sup_ctc, sup_seq, part, teacher, eos_lens, alpha)
            for name, value in zip(groups, (ctc, seq, sup_ctc, sup_seq), strict=True):
                groups[name].append(value)
            utterances.append(index.numel())
            tokens.append(float(torch.round(eos_lens * width).sum()))
        pooled = {
            name: pooled_mean(values, utterances if "ctc" in name else tokens)
            for name, values in groups.items()
        }
        total = hp.ctc_weight * pooled["ctc"] + (1 - hp.ctc_weight) * pooled["seq"]
        return total, pooled["sup_ctc"], pooled["sup_seq"]

    def _objective(self, sup_ctc, sup_seq, predictions, targets, eos_lens, alpha):
        """One kind of rows' objective, its two branches (loss_ctc, loss_seq)
        before ``ctc_weight``: supervised and distillation losses mixed by
        ``alpha`` (``branch_losses``); at alpha 0 the supervised losses alone,
        exactly a teacher's objective (the control of a distilled student
        started from the same checkpoint, and self-training on the consensus)."""
        hp = self.hparams
        if alpha == 0:
            return sup_ctc, sup_seq
        w_ctc, w_seq = strategy_weights(
            hp.strategy,
            targets["ctc_per"],
            targets["att_per"],
            scope=hp.weight_scope,
            weight_temperature=hp.weight_temperature,
        )
        # The original leaves the student at T = 1 (only the stored teachers
        # are at T); soften_student gives Hinton et al.'s form.
        p_ctc = student_kd_log_probs(
            predictions.p_ctc, hp.temperature, hp.soften_student
        )
        p_seq = student_kd_log_probs(
            predictions.p_seq, hp.temperature, hp.soften_student
        )
        if hp.distill_ctc:
            kd_ctc = ctc_kd_loss(
                p_ctc,
                predictions.wav_lens,
                targets["ctc_hyps"],
                targets["ctc_hyp_lens"],
                w_ctc,
                hp.blank_index,
            )
            self._add_weights("ctc", w_ctc)
        else:  # the CTC branch learns from the reference alone
            kd_ctc = p_ctc.new_zeros(())
        kd_seq = seq_kd_loss(p_seq, targets["att_dist"], w_seq, eos_lens)
        self.log_loss_part("kd_ctc", kd_ctc)
        self.log_loss_part("kd_seq", kd_seq)
        self._add_weights("seq", w_seq)
        return branch_losses(
            kd_ctc, kd_seq, sup_ctc, sup_seq, alpha, hp.temperature, hp.distill_ctc
        )

    def _add_weights(self, name, weights):
        """Accumulates this epoch's teacher weights [B, N] for the summary."""
        stats = weight_stats(weights)
        means = torch.tensor(stats["mean_weight_per_teacher"])
        old = self.weight_sums.get(name, (0, torch.zeros_like(means), 0.0, 0.0))
        self.weight_sums[name] = (
            old[0] + 1,
            old[1] + means,
            old[2] + stats["entropy_nats"],
            old[3] + stats["mean_top_weight"],
        )

    def weights_summary(self):
        """{ctc|seq: mean weight per teacher, entropy (nats), mean top weight}."""
        return {
            name: {
                "mean_weight_per_teacher": [round(float(w) / n, 6) for w in sums],
                "entropy_nats": entropy / n,
                "mean_top_weight": top / n,
            }
            for name, (n, sums, entropy, top) in self.weight_sums.items()
        }

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)
        if stage != sb.Stage.TRAIN or not self.weight_sums:
            return
        summary = self.weights_summary()
        for name, values in summary.items():
            self.train_stats[f"w_{name}_entropy"] = values["entropy_nats"]
            self.train_stats[f"w_{name}_top"] = values["mean_top_weight"]
        if sb.utils.distributed.if_main_process():
            append_weights_log(self.hparams.weights_log, epoch, summary)


def _is_mixed(batch):
    """Does a training batch hold unlabelled audio (``KDBatch.unlabelled``)?"""
    unlabelled = getattr(batch, "unlabelled", None)
    return unlabelled is not None and bool(unlabelled.any())


def _rows(padded, index):
    """(padded tensor, relative lengths) restricted to the rows ``index``."""
    values, lengths = padded
    return values.index_select(0, index), lengths.index_select(0, index)


def append_weights_log(path, epoch, summary):
    """One JSON line per epoch: the strategy's teacher weights, summarised."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": epoch, **summary}) + "\n")
