"""The joint CTC/attention training loop shared by teachers and students.

``ASRBrain`` is a SpeechBrain ``Brain``: ``compute_forward`` runs features,
normalisation, encoder, CTC head and teacher-forced decoder (plus a search on
valid/test); ``compute_objectives`` returns the supervised loss
``ctc_weight * CTC + (1 - ctc_weight) * NLL``. The distillation stage subclasses
it and overrides ``combine_losses`` only.

Hyperparameters it reads: ``model``, ``normalize``, ``compute_features``,
``log_softmax``, ``ctc_cost``, ``seq_cost``, ``ctc_weight``, ``augment`` and
``wav_augment``, ``valid_beam_size``, ``test_beam_size``, ``decode_ctc_weight``,
``bos_index``, ``eos_index``, ``blank_index``, ``lr_annealing``, ``epoch_counter``,
``train_logger``, ``per_stats``, ``test_per_file``.
"""

import collections
import logging
import os
import time

import speechbrain as sb
from speechbrain.decoders.ctc import ctc_greedy_decode
from speechbrain.utils.distributed import if_main_process, run_on_main

from mtkd import cluster
from mtkd.model import write_model_config
from mtkd.runs import best_checkpoint_model_path

logger = logging.getLogger(__name__)

Predictions = collections.namedtuple(
    "Predictions", ["p_ctc", "p_seq", "wav_lens", "hyps"]
)


class ASRBrain(sb.Brain):
    """Training, validation and test of one joint CTC/attention recogniser."""

    def _make_searchers(self):
        """Greedy/beam searchers over the model's decoder (made on first use,
        when the modules are on their device)."""
        model = unwrap(self.modules.model)
        ids = dict(bos_index=self.hparams.bos_index, eos_index=self.hparams.eos_index)
        beam_options = dict(self.hparams.beam_options)
        beam_options["ctc_weight"] = self.hparams.decode_ctc_weight
        beam_options["blank_index"] = self.hparams.blank_index
        self.searchers = {
            sb.Stage.VALID: model.searcher(
                beam_size=self.hparams.valid_beam_size, **ids, **beam_options
            ),
            sb.Stage.TEST: model.searcher(
                beam_size=self.hparams.test_beam_size, **ids, **beam_options
            ),
        }

    def compute_forward(self, batch, stage):
        """Log-probabilities of both heads, and hypotheses on valid/test."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        tokens_bos, _ = batch.phn_encoded_bos
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            # Speed perturbation resamples the whole padded batch and the drops
            # keep its length, so relative lengths and labels stay as they are.
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        epoch = self.hparams.epoch_counter.current
        feats = self.modules.normalize(feats, wav_lens, epoch=epoch)
        encoded, ctc_logits, seq_logits = self.modules.model(
            feats, wav_lens, tokens_bos
        )
        p_ctc = self.hparams.log_softmax(ctc_logits)
        p_seq = self.hparams.log_softmax(seq_logits)
        hyps = None
        if stage != sb.Stage.TRAIN:
            if not hasattr(self, "searchers"):
                self._make_searchers()
            hyps, _, _, _ = self.searchers[stage](encoded, wav_lens)
        return Predictions(p_ctc, p_seq, wav_lens, hyps)

    def supervised_losses(self, predictions, batch):
        """CTC and attention (NLL) losses against the reference phones."""
        phns, phn_lens = batch.phn_encoded
        phns_eos, phn_lens_eos = batch.phn_encoded_eos
        loss_ctc = self.hparams.ctc_cost(
            predictions.p_ctc, phns, predictions.wav_lens, phn_lens
        )
        loss_seq = self.hparams.seq_cost(predictions.p_seq, phns_eos, phn_lens_eos)
        return loss_ctc, loss_seq

    def combine_losses(self, loss_ctc, loss_seq, predictions, batch, stage):
        """The training objective; the distillation stage overrides this."""
        weight = self.hparams.ctc_weight
        return weight * loss_ctc + (1 - weight) * loss_seq

    def compute_objectives(self, predictions, batch, stage):
        """The loss, and the error-rate bookkeeping on valid/test."""
        loss_ctc, loss_seq = self.supervised_losses(predictions, batch)
        loss = self.combine_losses(loss_ctc, loss_seq, predictions, batch, stage)
        self.log_loss_part("ctc_loss", loss_ctc)
        self.log_loss_part("seq_loss", loss_seq)
        if stage != sb.Stage.TRAIN:
            phns, phn_lens = batch.phn_encoded
            decode = self.label_encoder.decode_ndim
            self.per_metrics.append(
                batch.id, self.phones_only(predictions.hyps), phns, None,
                phn_lens, decode,
            )  # fmt: skip
            ctc_hyps = ctc_greedy_decode(
                predictions.p_ctc, predictions.wav_lens, self.hparams.blank_index
            )
            self.ctc_per_metrics.append(
                batch.id, self.phones_only(ctc_hyps), phns, None, phn_lens, decode
            )
        return loss

    def phones_only(self, hyps):
        """Hypotheses (lists of label ids) without bos, eos and blank: a
        special label the decoder emits is no phone, so it is neither scored
        nor transcribed (``mtkd_tools.export.PhoneTokenizer`` drops it too)."""
        hp = self.hparams
        special = {hp.bos_index, hp.eos_index, hp.blank_index}
        return [[int(t) for t in hyp if int(t) not in special] for hyp in hyps]

    def log_loss_part(self, name, value):
        """Accumulates one named part of the loss for this stage's averages."""
        total, count = self.loss_parts.get(name, (0.0, 0))
        self.loss_parts[name] = (total + float(value.detach()), count + 1)

    def loss_part_averages(self):
        """{name: average over this stage's batches} of the logged parts."""
        return {
            k: total / max(count, 1) for k, (total, count) in self.loss_parts.items()
        }

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **kwargs):
        # Workers leave SIGTERM/SIGUSR1/SIGINT to this process (mtkd.cluster).
        kwargs = cluster.loader_kwargs_for_signals(kwargs)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **kwargs)

    def on_fit_start(self):
        super().on_fit_start()  # wraps DDP, recovers the last checkpoint
        cluster.log_resume(self)

    def _wrap_distributed(self):
        if self.distributed_launch and self.device_type == "cpu":
            cluster.wrap_ddp_without_sync_batchnorm(self)  # SyncBatchNorm: GPU only
        else:
            super()._wrap_distributed()

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        # Pre-emption / time limit (mtkd.cluster): checkpoint here, exit, requeue.
        cluster.checkpoint_and_exit_if_stopping(self, loss, should_step)

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TEST:
            cluster.exit_if_stopping(self)
        self.loss_parts = {}
        # Wall time of each epoch (train + valid) and of the test, in the train
        # log, so summaries can add them up across interrupted and resumed runs.
        if stage != sb.Stage.VALID:
            self.stage_started = time.time()
        if stage != sb.Stage.TRAIN:
            self.per_metrics = self.hparams.per_stats()
            self.ctc_per_metrics = self.hparams.per_stats()

    def elapsed(self):
        """Seconds since this epoch's training (or the test) started."""
        return round(time.time() - self.stage_started, 1)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """NewBob and checkpoints on valid; the PER report on test."""
        stats = {"loss": stage_loss, **self.loss_part_averages()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["PER"] = self.per_metrics.summarize("error_rate")
        stats["CTC_PER"] = self.ctc_per_metrics.summarize("error_rate")
        if stage == sb.Stage.VALID:
            # Which valid figure selects checkpoints and drives the annealing:
            # `PER` (the attention search, as the paper) or `CTC_PER`.
            selection = stats[self.hparams.selection_metric]
            old_lr, new_lr = self.hparams.lr_annealing(selection)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr, "time_s": self.elapsed()},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"selection": selection, "PER": stats["PER"], "epoch": epoch},
                min_keys=["selection"],
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "Epoch loaded": self.hparams.epoch_counter.current,
                    "time_s": self.elapsed(),
                },
                test_stats=stats,
            )
            if if_main_process():
                write_per_report(self.hparams.test_per_file, stats, self.per_metrics)


def train_and_test(
    brain_class, loaded, datasets, label_encoder, train_loader_kwargs, best_label
):
    """One stage's run: builds ``brain_class`` from the loaded hparams, writes the
    model's config, trains (resuming from the last checkpoint), tests the best
    valid checkpoint and prints its ``model.ckpt`` path under ``best_label``.

    ``loaded``: ``mtkd.hparams.load_hparams``'s result; ``datasets``: dict with
    ``train``, ``valid``, ``test``. Returns the brain.
    """
    hparams = loaded.hparams
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=loaded.run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    run_on_main(
        write_model_config,
        args=[hparams["save_folder"], hparams, hparams["model"]],
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=train_loader_kwargs,
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        datasets["test"],
        min_key="selection",
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    if if_main_process():
        print(f"{best_label} (best valid checkpoint):")
        print(best_checkpoint_model_path(hparams["save_folder"]))
    return brain


def write_per_report(path, stats, per_metrics):
    """The test PER report: a summary line, then SpeechBrain's full statistics."""
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as w:
        w.write(f"PER: {stats['PER']:.2f}  CTC_PER: {stats['CTC_PER']:.2f}\n\n")
        per_metrics.write_stats(w)
    os.replace(tmp, path)
    logger.info("PER report written to %s", path)


def unwrap(module):
    """The module itself, whether or not DDP wraps it."""
    return getattr(module, "module", module)
