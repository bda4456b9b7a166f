"""Stage 3 pieces: teacher targets in the data pipeline, checks, the KD Brain.

Teacher targets are read from the store by utterance ID inside the data
pipeline (so DataLoader workers prefetch them and any batch size, order,
sampler or augmentation works) and padded by ``KDBatch``. ``KDBrain`` is the
teacher's ``ASRBrain`` with one change: on training batches the objective mixes
the supervised losses with the distillation losses of ``mtkd.strategies``.
"""

import json
import os

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch

from mtkd import RecipeError
from mtkd.brain import ASRBrain
from mtkd.runs import best_checkpoint_model_path
from mtkd.store import collate_teacher_targets
from mtkd.strategies import (
    ctc_kd_loss,
    kd_objective,
    seq_kd_loss,
    strategy_weights,
    student_kd_log_probs,
    weight_stats,
)

TEACHER_KEY = "teacher"


class KDBatch(PaddedBatch):
    """A PaddedBatch plus ``.teacher``: the store's targets, padded (see
    ``collate_teacher_targets``: ``ctc_hyps`` [B, N, H], ``ctc_hyp_lens`` [B, N],
    ``att_dist`` [B, N, L+1, V], ``ctc_per`` / ``att_per`` [B, N])."""

    def __init__(self, examples, *args, **kwargs):
        targets = [example.pop(TEACHER_KEY) for example in examples]
        super().__init__(examples, *args, **kwargs)
        self.teacher = collate_teacher_targets(targets)

    def to(self, *args, **kwargs):
        moved = super().to(*args, **kwargs)
        moved.teacher = {k: v.to(*args, **kwargs) for k, v in self.teacher.items()}
        return moved

    def pin_memory(self):
        pinned = super().pin_memory()
        pinned.teacher = {k: v.pin_memory() for k, v in self.teacher.items()}
        return pinned


def add_teacher_pipeline(train_data, store, split="train"):
    """Adds the ``teacher`` item (one store lookup per utterance) to ``train_data``."""

    @sb.utils.data_pipeline.takes("id")
    @sb.utils.data_pipeline.provides(TEACHER_KEY)
    def teacher_pipeline(utt_id):
        return store.get(split, utt_id)

    sb.dataio.dataset.add_dynamic_item([train_data], teacher_pipeline)


def check_store_matches(store, hparams, label_encoder):
    """Stops before training if the store was made for other data or labels.

    Compares the label set (labels and order), blank/bos/eos, the distillation
    temperature and the train manifest (utterance IDs and phones); the error
    says what differs and what to do.
    """
    where = hparams["tea_infer_dir"]
    store.verify()  # damaged bytes anywhere in a part: named now, not mid-epoch
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
        f"pretrain is True but pretrain_st_dir ({pretrain_st_dir}) is neither a "
        "teacher model.ckpt nor a folder holding one (a CKPT+... checkpoint "
        "folder, or a teacher's save/ or output folder): give one with "
        "--pretrain_st_dir, or set --pretrain False to start the student from "
        "scratch."
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

    def combine_losses(self, loss_ctc, loss_seq, predictions, batch, stage):
        if stage != sb.Stage.TRAIN or self.hparams.alpha == 0:
            # alpha 0: the labels alone, exactly a teacher's objective (the
            # control of a distilled student started from the same checkpoint).
            return super().combine_losses(loss_ctc, loss_seq, predictions, batch, stage)
        hp, targets = self.hparams, batch.teacher
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
        _, eos_lens = batch.phn_encoded_eos
        kd_seq = seq_kd_loss(p_seq, targets["att_dist"], w_seq, eos_lens)
        total, parts = kd_objective(
            kd_ctc, kd_seq, loss_ctc, loss_seq, hp.alpha, hp.temperature,
            hp.ctc_weight, hp.distill_ctc,
        )  # fmt: skip
        self.log_loss_part("kd_ctc", parts["kd_ctc"])
        self.log_loss_part("kd_seq", parts["kd_seq"])
        self._add_weights("seq", w_seq)
        return total

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


def append_weights_log(path, epoch, summary):
    """One JSON line per epoch: the strategy's teacher weights, summarised."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"epoch": epoch, **summary}) + "\n")
