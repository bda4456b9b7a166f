"""A trained model as a folder for SpeechBrain's inference API, and its cost.

``export_model`` turns an experiment folder of ``train_teacher.py`` or
``train_kd.py`` (``hyperparams.yaml``, ``save/model_config.json``,
``save/label_encoder.txt``, ``save/CKPT+*/``) into a folder that
``speechbrain.inference.ASR.EncoderDecoderASR.from_hparams`` loads offline::

    hyperparams.yaml   inference only: features, normalisation, network, search
    asr.ckpt           the checkpoint's model.ckpt (weights)
    normalizer.ckpt    the checkpoint's normalize.ckpt (feature statistics)
    tokenizer.ckpt     the run's label_encoder.txt (labels and their indices)

The folder's ``pretrainer`` loads these three files from the folder itself
(``from_hparams`` passes its ``source`` as the default source: no hub, no
network). The exported search is the run's test search (``test_beam_size``,
``decode_ctc_weight``, ``beam_options``), so the exported model reproduces the
run's ``per_test.txt`` when it decodes the test set in the same batches.

**Dependencies of an exported folder.** ``hyperparams.yaml`` names two classes
of this recipe: the network (``mtkd.model.CTCAttentionASR``, built from the
run's own ``model_config.json`` keys so that any architecture the recipe
trains loads with its checkpoint exactly) and ``PhoneTokenizer`` below.
``EncoderDecoderASR`` turns hypotheses into text with ``tokenizer.decode_ids``,
which SpeechBrain's ``CTCTextEncoder`` lacks; SpeechBrain's only tokenizer with
that method is SentencePiece, which cannot hold a fixed 42-label phone set with
blank/bos/eos at given indices. So the folder needs SpeechBrain and this
recipe's ``mtkd`` and ``mtkd_tools`` packages importable (pure Python, needing
only SpeechBrain and torch; folders exported before the move name
``mtkd.export``, an alias kept for them): run from the recipe folder, or put it on
``PYTHONPATH``. ``transcribe.py`` does that by itself.
"""

import glob
import json
import logging
import os
import pickle
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy
import ruamel.yaml
import soundfile
import torch
import torchaudio.functional
from speechbrain.dataio.encoder import CTCTextEncoder

from mtkd import RecipeError
from mtkd.locks import pid_runs
from mtkd.model import MODEL_CONFIG_FILE, CTCAttentionASR
from mtkd.runs import HPARAMS_FILE, RunFolder, plain_value, read_hyperparams

logger = logging.getLogger(__name__)

EXPORT_HEADER = "# Exported by export_model.py"
# Exported file -> the run's file it copies (checkpoint files, then save/).
CHECKPOINT_FILES = {"asr.ckpt": "model.ckpt", "normalizer.ckpt": "normalize.ckpt"}
TOKENIZER_FILE = "tokenizer.ckpt"
EXPORT_FILES = (HPARAMS_FILE, *CHECKPOINT_FILES, TOKENIZER_FILE)
# What a folder given to transcribe.py is searched for (case-insensitive).
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".mp3", ".sph", ".nist", ".aif", ".aiff",
    ".aifc", ".au", ".caf", ".w64", ".rf64",
)  # fmt: skip


class ExportError(RecipeError):
    """An export or a transcription that cannot be done as asked."""


class NotAnExperimentError(ExportError):
    """The folder is not an experiment folder of this recipe."""


class UnfinishedRunError(ExportError):
    """An experiment folder of this recipe with nothing to export yet."""


# ---------------------------------------------------------------- inference


class PhoneTokenizer(CTCTextEncoder):
    """The run's label encoder, with the ``decode_ids`` that EncoderDecoderASR
    calls: label indices -> phones separated by single spaces.

    A special label the decoder emits (``<bos>``, ``<eos>``, ``<blank>``) is
    no phone: it is left out, as the training script leaves it out of the
    PER it reports (``ASRBrain.phones_only``).
    """

    def decode_ids(self, ids):
        """[3, 4, 0, 41] (list or tensor) -> "aa ae z" (the 39-phone labels)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        labels = (self.ind2lab[int(i)] for i in ids)
        return " ".join(label for label in labels if not _is_special(label))


def _is_special(label):
    """``<bos>``, ``<eos>``, ``<blank>``: the labels that are no phone."""
    return label.startswith("<") and label.endswith(">")


def make_searcher(
    model, bos_index, eos_index, blank_index, beam_size, ctc_weight, beam_options
):
    """The run's test-time search over ``model`` (``ASRBrain``'s own call):
    greedy when ``beam_size`` is 1, joint CTC/attention beam search when
    ``ctc_weight`` > 0."""
    return model.searcher(
        bos_index=bos_index,
        eos_index=eos_index,
        beam_size=beam_size,
        ctc_weight=ctc_weight,
        blank_index=blank_index,
        **dict(beam_options or {}),
    )


def load_exported(model_dir, device="cpu", savedir=None):
    """``EncoderDecoderASR.from_hparams`` on an exported folder.

    With ``savedir`` None nothing is written anywhere: SpeechBrain reads the
    files from the folder itself.
    """
    from speechbrain.inference.ASR import EncoderDecoderASR

    model_dir = os.path.abspath(model_dir)
    check_exported_folder(model_dir)
    for name in CHECKPOINT_FILES:
        load_checkpoint_file(os.path.join(model_dir, name))
    return EncoderDecoderASR.from_hparams(
        source=model_dir, savedir=savedir, run_opts={"device": device}
    )


def check_exported_folder(model_dir):
    """Raises an ExportError that says what ``model_dir`` is and what to do
    unless it is a complete exported folder (every file of EXPORT_FILES).

    A training run's folder (or its ``save/``, a ``CKPT+*`` folder, a
    ``model.ckpt``) gets the export command; an export that lost a file gets
    the file's name and the command that writes it again.
    """
    run = _training_run(model_dir)
    if run is not None:
        found = _exports_of(run)
        target = found[0] if found else f"{run}_exported"
        transcribe = f"python transcribe.py {target} FILE_OR_FOLDER..."
        what = "is a training run" if run == model_dir else f"is part of the run {run}"
        raise ExportError(
            f"{model_dir} {what} (train_teacher.py or train_kd.py writes such "
            "folders), not an exported model; transcribe.py reads what "
            "export_model.py makes of a run. "
            + (
                f"An export of this run is at {target}: {transcribe}"
                if found
                else f"Export it first: python export_model.py --from {run} --to "
                f"{target}, then {transcribe}"
            )
        )
    if not os.path.isfile(os.path.join(model_dir, HPARAMS_FILE)):
        raise ExportError(
            f"{model_dir} is not an exported model (no {HPARAMS_FILE}): make one "
            "with `python export_model.py --from EXPERIMENT_DIR --to MODEL_DIR`."
        )
    missing = [
        name for name in EXPORT_FILES if not os.path.isfile(f"{model_dir}/{name}")
    ]
    if missing:
        source = _exported_from(model_dir) or "EXPERIMENT_DIR"
        raise ExportError(
            f"{model_dir} is an exported model without {' and '.join(missing)} "
            f"(an exported folder holds {', '.join(EXPORT_FILES)}): copy the "
            "whole folder again from where it was exported, or export the run "
            f"again: python export_model.py --from {source} --to {model_dir}"
        )


def _training_run(path):
    """The training run folder ``path`` is or lies in (a run folder, its
    ``save/``, a ``CKPT+*`` folder or a ``model.ckpt``), else None."""
    try:
        folder, _ = _experiment_folder(path)
    except NotAnExperimentError:
        return None  # missing, or a file that is no checkpoint
    run = RunFolder(folder)
    if _is_export(folder) or not os.path.isfile(run.hparams_file):
        return None
    return folder if os.path.isdir(run.save_folder) else None


def _exported_from(model_dir):
    """The experiment folder an export's header names, or None."""
    try:
        with open(os.path.join(model_dir, HPARAMS_FILE), encoding="utf-8") as f:
            header = [next(f, "") for _ in range(3)]
    except OSError:
        return None
    for line in header:
        if line.startswith("#   experiment: "):
            return line.split(": ", 1)[1].strip()
    return None


def _exports_of(run):
    """Complete exported folders of the run ``run`` beside it or inside the
    folder above it (export_model.py's header names the run), sorted."""
    parent = os.path.dirname(run)
    candidates = [os.path.join(parent, name) for name in sorted(os.listdir(parent))]
    return [
        folder
        for folder in candidates
        if _is_export(folder)
        and _exported_from(folder) == run
        and all(os.path.isfile(os.path.join(folder, n)) for n in EXPORT_FILES)
    ]


def read_audio(path, sample_rate):
    """A file soundfile reads (NIST SPHERE, RIFF WAV, FLAC, ...) as a 1-D float32
    tensor at ``sample_rate``: channels averaged, resampled when needed."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError("no audio samples")
    if not numpy.isfinite(data).all():
        raise ValueError("NaN or infinite samples: the file is damaged")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wav = torch.from_numpy(numpy.ascontiguousarray(mono, dtype=numpy.float32))
    if rate != sample_rate:
        wav = torchaudio.functional.resample(wav, rate, sample_rate)
    return wav


# Long recordings are cut into chunks of at most this many seconds (TIMIT's
# longest sentence is under 8 s, so every corpus file is decoded whole).
DEFAULT_CHUNK_SECONDS = 10.0
_FRAME_SECONDS = 0.01  # energy frames in which a cut point is looked for


def split_at_silences(wav, sample_rate, max_seconds=DEFAULT_CHUNK_SECONDS):
    """Cuts a 1-D waveform into chunks of at most ``max_seconds``.

    Returns a list of (start, end) sample indices that cover ``wav`` exactly,
    in order. A waveform no longer than ``max_seconds`` is one chunk. Longer
    ones are cut at the quietest 10 ms frame (lowest energy) between half and
    all of ``max_seconds`` from the chunk's start (never leaving a last chunk
    shorter than half of it), so cuts fall in pauses where there are any and
    every chunk but a short recording's only one lasts between
    ``max_seconds / 2`` and ``max_seconds``. Decoding then costs at most a
    bounded amount per chunk: time grows linearly with the audio, where one
    search over a long file grows much faster (its attention and maximum
    length both grow with the file).
    """
    total = len(wav)
    most = max(int(max_seconds * sample_rate), 2)
    if total <= most:
        return [(0, total)]
    frame = max(int(_FRAME_SECONDS * sample_rate), 1)
    chunks, start = [], 0
    while total - start > most:
        low = start + most // 2
        high = min(start + most, total - most // 2)
        # Energy of the frames centred in [low, high]; the cut is the centre.
        first = max(low - frame // 2, 0)
        segment = wav[first : high + frame // 2 + 1].double() ** 2
        n_frames = max((len(segment) - frame) // frame + 1, 1)
        energy = segment[: n_frames * frame].reshape(n_frames, -1).sum(dim=1)
        cut = first + int(torch.argmin(energy)) * frame + frame // 2
        cut = min(max(cut, low), high)
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total))
    return chunks


# Speech found by energy alone, so that silence is never searched: the
# attention search of a model that hears no phone may never emit eos and
# then writes a token per encoder frame (60 s of silence: 51 s and about
# 3,200 tokens). A 10 ms frame holds speech when its level is above
# SILENCE_DBFS and either SPEECH_ABOVE_FLOOR_DB above the recording's noise
# floor (its 10th percentile frame level) or at least LOUD_DBFS (so that
# loud audio of little dynamic range, speech in steady noise, is still
# decoded); a stretch counts from MIN_SPEECH_SECONDS of such frames in a row.
SILENCE_DBFS = -60.0  # dB of full scale (mean square): rms 0.001
LOUD_DBFS = -35.0
SPEECH_ABOVE_FLOOR_DB = 15.0
MIN_SPEECH_SECONDS = 0.05
# Pauses of at least this long are not decoded (a TIMIT sentence's own
# pauses are shorter); PAUSE_MARGIN_SECONDS of each stays with the speech
# beside it, as the leading and trailing silence of a TIMIT file does.
LONG_PAUSE_SECONDS = 1.0
PAUSE_MARGIN_SECONDS = 0.3
SILENCE_TOKEN = "sil"  # what a stretch without speech is transcribed as


def frame_levels(wav, sample_rate):
    """[F] float64: the level of each 10 ms frame of a 1-D waveform, in dB of
    full scale (mean square; -200 for digital silence). The last partial
    frame counts as a frame."""
    frame = max(int(_FRAME_SECONDS * sample_rate), 1)
    samples = wav.double()
    padded = torch.nn.functional.pad(samples, (0, (-len(samples)) % frame))
    power = (padded.reshape(-1, frame) ** 2).mean(dim=1)
    return (10.0 * torch.log10(power.clamp_min(1e-20))).numpy()


def speech_segments(wav, sample_rate):
    """The stretches of a 1-D waveform that hold speech: a list of (start,
    end) sample indices, in order, [] when nothing does.

    Each stretch runs from its first to its last speech frame plus
    PAUSE_MARGIN_SECONDS of the silence around it; stretches closer than
    LONG_PAUSE_SECONDS are one stretch. So the pauses of at least
    LONG_PAUSE_SECONDS, and the silence before the first speech and after the
    last beyond the margin, are left out.
    """
    levels = frame_levels(wav, sample_rate)
    if len(levels) == 0:
        return []
    floor = float(numpy.percentile(levels, 10))
    above_floor = levels >= floor + SPEECH_ABOVE_FLOOR_DB
    loud = (levels >= SILENCE_DBFS) & (above_floor | (levels >= LOUD_DBFS))
    frame = max(int(_FRAME_SECONDS * sample_rate), 1)
    shortest = max(int(round(MIN_SPEECH_SECONDS / _FRAME_SECONDS)), 1)
    gap = int(round(LONG_PAUSE_SECONDS / _FRAME_SECONDS))
    margin = int(round(PAUSE_MARGIN_SECONDS / _FRAME_SECONDS))
    runs, start = [], None  # runs of speech frames: [first, last + 1)
    for k, is_loud in enumerate([*loud.tolist(), False]):
        if is_loud and start is None:
            start = k
        elif not is_loud and start is not None:
            if k - start >= shortest:
                runs.append([start, k])
            start = None
    merged = []
    for first, end in runs:
        if merged and first - merged[-1][1] < gap:
            merged[-1][1] = end
        else:
            merged.append([first, end])
    return [
        (max(first - margin, 0) * frame, min((end + margin) * frame, len(wav)))
        for first, end in merged
    ]


def join_transcripts(pieces):
    """One phone string from the pieces of a recording, in order ("" for a
    piece that gave no phone): a run of ``sil`` across a join is one ``sil``
    (each piece and each pause left out begins or ends with one)."""
    tokens = []
    for piece in pieces:
        words = piece.split()
        if words and tokens and words[0] == SILENCE_TOKEN == tokens[-1]:
            words = words[1:]
        tokens += words
    return " ".join(tokens)


def batches_by_length(lengths, batch_size):
    """Index lists of batches of similar length: sorted ascending (ties keep
    their order), then cut in ``batch_size`` (the recipe's test loader does
    the same on durations)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def transcribe_waveforms(asr, wavs):
    """Phone strings of one batch of 1-D waveforms, zero-padded on the right
    with relative lengths, as SpeechBrain's PaddedBatch makes them."""
    longest = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), longest)
    for row, wav in enumerate(wavs):
        batch[row, : len(wav)] = wav
    rel_lens = torch.tensor([len(w) / longest for w in wavs])
    phones, _ = asr.transcribe_batch(batch, rel_lens)
    return phones


def exported_batch_size(asr, default=8):
    """The batch size the run decoded its test set with (saved by the export)."""
    return int(getattr(asr.hparams, "test_batch_size", default) or default)


# ----------------------------------------------------------- the experiment


@dataclass
class Experiment:
    """What an export reads from one experiment folder."""

    folder: str
    save_folder: str
    hparams_file: str
    config: dict  # model_config.json
    checkpoint: str  # the CKPT+* folder (model.ckpt, normalize.ckpt)
    meta: dict  # the checkpoint's meta (epoch, selection, ...), may be empty
    is_best: bool  # the checkpoint is the one with the lowest `selection`


def _what_to_do():
    return (
        "Give --from the output folder of a train_teacher.py or train_kd.py run "
        "(the folder that holds hyperparams.yaml and save/)."
    )


def _experiment_folder(path):
    """The experiment folder for ``path``: the folder itself, or the one above
    a ``save`` folder, a ``CKPT+*`` folder or a ``model.ckpt`` given instead.
    Returns (experiment folder, checkpoint path implied by ``path`` or None)."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise NotAnExperimentError(f"{path} does not exist. {_what_to_do()}")
    checkpoint = None
    if os.path.isfile(path) and os.path.basename(path) == "model.ckpt":
        checkpoint, path = os.path.dirname(path), os.path.dirname(path)
    if os.path.basename(path).startswith("CKPT+"):
        checkpoint, path = checkpoint or path, os.path.dirname(path)
    if os.path.isfile(os.path.join(path, MODEL_CONFIG_FILE)):
        path = os.path.dirname(path)  # a save folder
    if not os.path.isdir(path):
        raise NotAnExperimentError(f"{path} is not a folder. {_what_to_do()}")
    return path, checkpoint


def _checkpoint_folder(path):
    """A ``CKPT+*`` folder, given as the folder or its ``model.ckpt``."""
    path = os.path.abspath(path)
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ExportError(
            f"Checkpoint {path} does not exist: give --checkpoint a CKPT+* folder "
            "of the run's save/ folder, or its model.ckpt."
        )
    for name in CHECKPOINT_FILES.values():
        if not os.path.isfile(os.path.join(path, name)):
            raise ExportError(
                f"Checkpoint {path} has no {name}: is it a checkpoint folder of "
                "this recipe (CKPT+* in a run's save/ folder)?"
            )
    return path


def _checkpoint_meta(checkpoint):
    """The meta values of a checkpoint's CKPT.yaml ({} when there is none)."""
    path = os.path.join(checkpoint, "CKPT.yaml")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return dict(ruamel.yaml.YAML(typ="safe").load(f) or {})
    except (ruamel.yaml.YAMLError, TypeError, ValueError):
        return {}  # only the export's header comment uses it


def find_experiment(path, checkpoint=None):
    """Checks that ``path`` is a (finished enough) run of this recipe.

    Returns an ``Experiment`` with the best checkpoint (lowest ``selection``:
    the best valid figure, as the training script's test) unless
    ``checkpoint`` (a CKPT+* folder or its model.ckpt) names another.
    """
    folder, implied = _experiment_folder(path)
    run = RunFolder(folder)
    save, hparams_file, config_file = (
        run.save_folder,
        run.hparams_file,
        run.model_config_file,
    )
    if not os.path.isfile(hparams_file) and not os.path.isdir(save):
        raise NotAnExperimentError(
            f"{folder} is not an experiment folder of this recipe: it has neither "
            f"{HPARAMS_FILE} nor save/. {_what_to_do()}"
        )
    if os.path.isfile(hparams_file):
        with open(hparams_file, encoding="utf-8") as f:
            text = f.read()
        if "mtkd.model.CTCAttentionASR" not in text:
            raise NotAnExperimentError(
                f"{folder} is not an experiment folder of this recipe: its "
                f"{HPARAMS_FILE} builds no mtkd.model.CTCAttentionASR (another "
                f"recipe's run?). {_what_to_do()}"
            )
    if not os.path.isfile(config_file):
        if not os.path.isfile(hparams_file):
            raise NotAnExperimentError(
                f"{folder} is not an experiment folder of this recipe: no "
                f"{HPARAMS_FILE} and no save/{MODEL_CONFIG_FILE}. {_what_to_do()}"
            )
        raise UnfinishedRunError(
            f"{folder} is an unfinished run: save/{MODEL_CONFIG_FILE} is missing "
            "(the run stopped before training began). Run its training command "
            "again (it resumes), then export."
        )
    if not os.path.isfile(hparams_file):
        raise NotAnExperimentError(
            f"{folder} has save/{MODEL_CONFIG_FILE} but no {HPARAMS_FILE}: export "
            f"needs the run's folder as the run left it. {_what_to_do()}"
        )
    try:
        config = run.model_config()
    except json.JSONDecodeError as err:
        raise NotAnExperimentError(f"{config_file}: not valid JSON ({err})") from None
    needed = ("model", "features", "bos_index", "eos_index", "blank_index")
    if not isinstance(config, dict) or any(k not in config for k in needed):
        raise NotAnExperimentError(
            f"{config_file} is not a model_config.json of this recipe (it needs "
            f"the keys {', '.join(needed)}). {_what_to_do()}"
        )
    label_file = run.label_encoder_file(config)
    if not os.path.isfile(label_file):
        raise UnfinishedRunError(
            f"{folder}: {label_file} is missing; run the training command again "
            "(it resumes), then export."
        )
    best = None
    try:
        best = run.best_checkpoint().path
    except FileNotFoundError:
        if checkpoint is None and implied is None:
            raise UnfinishedRunError(
                f"{folder} is an unfinished run: {save} holds no checkpoint with a "
                "valid PER yet (the first epoch has not finished). Wait for the "
                "run (or resume it with its training command), then export."
            ) from None
    chosen = _checkpoint_folder(checkpoint or implied or best)
    is_best = best is not None and os.path.samefile(chosen, best)
    return Experiment(
        folder=folder,
        save_folder=save,
        hparams_file=hparams_file,
        config=config,
        checkpoint=chosen,
        meta=_checkpoint_meta(chosen),
        is_best=is_best,
    )


def read_test_settings(hparams_file):
    """The run's test-time search and test batch size, from its resolved
    ``hyperparams.yaml`` (read as plain YAML: nothing is built).

    Returns {"beam_size", "decode_ctc_weight", "beam_options", "batch_size",
    "normalize"} (``normalize``: the keyword arguments of its InputNormalization).
    """
    try:
        values = read_hyperparams(hparams_file)
    except ruamel.yaml.YAMLError as err:
        raise NotAnExperimentError(f"{hparams_file}: not valid YAML ({err})") from None
    missing = [k for k in ("test_beam_size", "beam_options") if k not in values]
    if missing:
        raise NotAnExperimentError(
            f"{hparams_file} has no {' / '.join(missing)}: not a run of this "
            f"recipe? {_what_to_do()}"
        )
    normalize = values.get("normalize")
    tag = getattr(getattr(normalize, "tag", None), "value", "") or ""
    normalize = plain_value(normalize) if isinstance(normalize, dict) else {}
    if tag and not tag.endswith("InputNormalization"):
        raise ExportError(
            f"{hparams_file}: `normalize` is {tag}; the export knows "
            "speechbrain.processing.features.InputNormalization only."
        )
    return {
        "beam_size": int(values["test_beam_size"]),
        "decode_ctc_weight": float(values.get("decode_ctc_weight", 0.0) or 0.0),
        "beam_options": plain_value(values["beam_options"] or {}),
        "batch_size": int(
            (values.get("test_dataloader_opts") or {}).get("batch_size", 1) or 1
        ),
        "normalize": normalize or {"norm_type": "global"},
    }


def read_test_per(folder):
    """The run's test PER (first line of per_test.txt), or None."""
    run = RunFolder(folder)
    if not os.path.isfile(run.per_test_file):
        return None
    return run.test_pers().get("PER")


# ------------------------------------------------------------------ writing


def _yaml_value(value):
    """One value as YAML text (flow style for lists and mappings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text:  # 1e-05 is a string in YAML 1.1
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{k}: {_yaml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(str(value))


def _block(mapping, indent="    "):
    return "".join(f"{indent}{k}: {_yaml_value(v)}\n" for k, v in mapping.items())


def render_hyperparams(experiment, settings):
    """The exported ``hyperparams.yaml`` text (deterministic: no timestamps)."""
    config = experiment.config
    features = config["features"]
    meta = {
        k: experiment.meta[k] for k in ("epoch", "selection") if k in experiment.meta
    }
    meta_text = ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in meta.items()
    )
    lines = [
        f"{EXPORT_HEADER} (multi-teacher distillation recipe) from",
        f"#   experiment: {experiment.folder}",
        f"#   checkpoint: {os.path.basename(experiment.checkpoint)}"
        + (f" ({meta_text})" if meta_text else "")
        + (", the best valid one" if experiment.is_best else ""),
    ]
    # per_test.txt scores the best checkpoint with the run's own search.
    same_test = experiment.is_best and settings.get("is_runs_search", True)
    per = read_test_per(experiment.folder) if same_test else None
    if per is not None:
        lines.append(f"#   test PER of the run (per_test.txt): {per:.2f}")
    lines += [
        "# Inference only. With SpeechBrain 1.1:",
        "#   from speechbrain.inference.ASR import EncoderDecoderASR",
        '#   asr = EncoderDecoderASR.from_hparams(source="<this folder>")',
        '#   asr.transcribe_file("x.wav")  # -> "sil dh ax ..."',
        "# The recipe's `mtkd` package must be importable (run from the recipe",
        "# folder or put it on PYTHONPATH): the network and the phone tokenizer",
        "# are its classes.",
        "",
    ]
    header = "\n".join(lines)
    model_args = _block(config["model"])
    return f"""{header}
sample_rate: {_yaml_value(features["sample_rate"])}
n_fft: {_yaml_value(features["n_fft"])}
n_mels: {_yaml_value(features["n_mels"])}
bos_index: {_yaml_value(config["bos_index"])}
eos_index: {_yaml_value(config["eos_index"])}
blank_index: {_yaml_value(config["blank_index"])}

# Search: the run's test settings (test_beam_size, decode_ctc_weight,
# beam_options) unless export_model.py was given others. beam_size 1: greedy
# search; decode_ctc_weight > 0: joint CTC/attention beam search.
beam_size: {_yaml_value(settings["beam_size"])}
decode_ctc_weight: {_yaml_value(settings["decode_ctc_weight"])}
beam_options: {_yaml_value(settings["beam_options"])}
# The run's test batch size (transcribe.py's default): padding changes a
# hypothesis now and then, so the run's batches reproduce per_test.txt exactly.
test_batch_size: {_yaml_value(settings["batch_size"])}

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: !ref <n_fft>
    n_mels: !ref <n_mels>

# transcribe_file(): audio resampled to the model's rate, channels averaged.
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>
    mix: avg-to-mono

normalizer: !new:speechbrain.processing.features.InputNormalization
{_block(settings["normalize"])}
asr_model: !new:mtkd.model.CTCAttentionASR
{model_args}
encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    - !ref <compute_features>
    - !ref <normalizer>
    - !ref <asr_model.enc>

decoder: !apply:mtkd_tools.export.make_searcher
    model: !ref <asr_model>
    bos_index: !ref <bos_index>
    eos_index: !ref <eos_index>
    blank_index: !ref <blank_index>
    beam_size: !ref <beam_size>
    ctc_weight: !ref <decode_ctc_weight>
    beam_options: !ref <beam_options>

tokenizer: !new:mtkd_tools.export.PhoneTokenizer

modules:
    encoder: !ref <encoder>
    decoder: !ref <decoder>
    asr_model: !ref <asr_model>

# Loads asr.ckpt, normalizer.ckpt and tokenizer.ckpt from this folder.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        asr: !ref <asr_model>
        normalizer: !ref <normalizer>
        tokenizer: !ref <tokenizer>
"""


def load_checkpoint_file(path):
    """``torch.load`` of a checkpoint file (CPU), or an ExportError naming it
    when the file is cut off or damaged (a full disk, a copy that stopped)."""
    try:
        return torch.load(path, map_location="cpu")
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(
            f"{path} cannot be read ({reason or type(err).__name__}): the file is "
            "damaged or cut off. Export another checkpoint with --checkpoint "
            "CKPT+..., or copy the file again from where the run wrote it."
        ) from None


def _check_checkpoint_fits(experiment):
    """The weights must fit the run's architecture exactly (SpeechBrain's
    pretrainer would load a mismatch with warnings only), and both checkpoint
    files must load, before anything is written."""
    model = CTCAttentionASR(**experiment.config["model"])
    path = os.path.join(experiment.checkpoint, "model.ckpt")
    state = load_checkpoint_file(path)
    load_checkpoint_file(os.path.join(experiment.checkpoint, "normalize.ckpt"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(
            f"{path} does not fit {experiment.save_folder}/{MODEL_CONFIG_FILE} "
            f"(a checkpoint of another run?): {str(err).splitlines()[0]}"
        ) from None
    return state


def _check_export(folder, state, output_neurons):
    """Loads the new folder through SpeechBrain as a user would and checks that
    it holds the checkpoint's weights exactly and the whole label set."""
    asr = load_exported(folder, device="cpu")
    loaded = asr.mods.asr_model.state_dict()
    if set(loaded) != set(state) or any(
        not torch.equal(loaded[k], state[k].to(loaded[k].dtype)) for k in state
    ):
        raise ExportError(f"{folder}: the exported model does not load its weights")
    saved = torch.load(os.path.join(folder, "normalizer.ckpt"), map_location="cpu")
    if int(asr.hparams.normalizer.count) != int(saved["count"]):
        raise ExportError(f"{folder}: the exported model does not load normalizer.ckpt")
    if len(asr.tokenizer.ind2lab) != output_neurons:
        raise ExportError(f"{folder}: the exported tokenizer lost labels")
    return asr


def _is_export(folder):
    path = os.path.join(folder, HPARAMS_FILE)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return f.readline().startswith(EXPORT_HEADER)


def remove_killed_exports(model_dir):
    """Cleans up after exports to ``model_dir`` that were killed: removes
    their ``MODEL_DIR.partial-PID`` folders (unfinished), and puts back an
    earlier export that one had moved to ``MODEL_DIR.old-PID`` just before
    it was killed (or removes it when ``model_dir`` is there). Folders of a
    process of this host that still runs are another export at work and are
    left alone. Returns the paths removed or restored."""
    done = []
    for kind in ("partial", "old"):
        for path in sorted(glob.glob(f"{glob.escape(model_dir)}.{kind}-*")):
            pid = path.rsplit("-", 1)[1]
            if not pid.isdigit() or pid_runs(int(pid)) or not os.path.isdir(path):
                continue
            if kind == "old" and not os.path.exists(model_dir):
                os.rename(path, model_dir)  # the export before the killed one
            else:
                shutil.rmtree(path)
            done.append(path)
    for path in done:
        logger.warning("Cleaned up %s, left by an export that was killed", path)
    return done


def export_model(
    experiment_dir,
    model_dir,
    checkpoint=None,
    beam_size=None,
    decode_ctc_weight=None,
    check=True,
):
    """Writes the inference folder ``model_dir`` for ``experiment_dir``.

    ``checkpoint``: a CKPT+* folder or its model.ckpt (default: the best
    valid checkpoint); ``beam_size``, ``decode_ctc_weight``: override the run's
    test settings. The folder is written under a temporary name beside
    ``model_dir`` and renamed when complete; an earlier export at ``model_dir``
    is replaced, anything else there is an error. ``check`` loads the result
    through SpeechBrain before the rename. Returns the Experiment exported.
    """
    experiment = find_experiment(experiment_dir, checkpoint)
    settings = read_test_settings(experiment.hparams_file)
    settings["is_runs_search"] = beam_size in (None, settings["beam_size"]) and (
        decode_ctc_weight in (None, settings["decode_ctc_weight"])
    )
    if beam_size is not None:
        if beam_size < 1:
            raise ExportError(f"beam_size must be 1 (greedy) or more, got {beam_size}")
        settings["beam_size"] = int(beam_size)
    if decode_ctc_weight is not None:
        if not 0.0 <= decode_ctc_weight <= 1.0:
            raise ExportError(
                f"decode_ctc_weight must be in [0, 1], got {decode_ctc_weight}"
            )
        settings["decode_ctc_weight"] = float(decode_ctc_weight)
    model_dir = os.path.abspath(model_dir)
    if os.path.exists(model_dir):
        if not os.path.isdir(model_dir) or (
            os.listdir(model_dir) and not _is_export(model_dir)
        ):
            raise ExportError(
                f"{model_dir} exists and is not an exported model: give --to a "
                "new folder (an earlier export there would be replaced)."
            )
    state = _check_checkpoint_fits(experiment)

    parent = os.path.dirname(model_dir)
    os.makedirs(parent, exist_ok=True)
    remove_killed_exports(model_dir)
    tmp = f"{model_dir}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    try:
        text = render_hyperparams(experiment, settings)
        with open(os.path.join(tmp, HPARAMS_FILE), "w", encoding="utf-8") as w:
            w.write(text)
        for exported, original in CHECKPOINT_FILES.items():
            shutil.copyfile(
                os.path.join(experiment.checkpoint, original),
                os.path.join(tmp, exported),
            )
        label_file = experiment.config.get("label_encoder", "label_encoder.txt")
        shutil.copyfile(
            os.path.join(experiment.save_folder, label_file),
            os.path.join(tmp, TOKENIZER_FILE),
        )
        if check:
            _check_export(tmp, state, experiment.config["model"]["output_neurons"])
        if os.path.exists(model_dir):  # an earlier export (checked above)
            old = f"{model_dir}.old-{os.getpid()}"
            os.rename(model_dir, old)
            os.rename(tmp, model_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return experiment


# --------------------------------------------------------------------- cost


def model_cost(experiment_dir, wav_paths, device="cpu", repeats=3, **options):
    """Size and speed of an experiment's model, for the results table.

    Arguments
    ---------
    experiment_dir : str
        A teacher or student experiment folder (what ``export_model`` takes).
    wav_paths : list of str
        Audio files to decode (any format soundfile reads; resampled to the
        model's rate), e.g. the test split's files.
    device : str
        "cpu" or "cuda[:N]".
    repeats : int
        Timed passes over all files; the RTF is their median.
    **options
        ``checkpoint`` (default: the best valid one), ``batch_size`` (default
        1: file by file, as a deployed recogniser; larger batches sort the
        files by length as the test loader).

    Returns
    -------
    dict
        ``parameters`` (int): the network's parameters; ``checkpoint_bytes``
        (int): size on disk of the checkpoint's model.ckpt + normalize.ckpt;
        ``rtf`` (float): real-time factor, median over ``repeats`` of the wall
        time of decoding all files with the exported model and the run's test
        search (features + encoder + search, audio already in memory) divided
        by the total audio duration, with one torch thread; ``audio_seconds``
        (float): that duration.

    The model is exported to a temporary folder and loaded through
    ``EncoderDecoderASR``, so the figure is the exported model's. One untimed
    pass over the first batch comes first (warm-up).
    """
    checkpoint = options.pop("checkpoint", None)
    batch_size = int(options.pop("batch_size", 1))
    if options:
        raise TypeError(f"model_cost: unknown options {sorted(options)}")
    if not wav_paths:
        raise ValueError("model_cost needs at least one audio file")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="mtkd-cost-") as tmp:
            model_dir = os.path.join(tmp, "model")
            experiment = export_model(
                experiment_dir, model_dir, checkpoint=checkpoint, check=False
            )
            asr = load_exported(model_dir, device=device)
            rate = asr.hparams.sample_rate
            wavs = [read_audio(path, rate) for path in wav_paths]
            batches = batches_by_length([len(w) for w in wavs], batch_size)
            batches = [[wavs[i] for i in batch] for batch in batches]
            transcribe_waveforms(asr, batches[0])  # warm-up
            times = []
            for _ in range(max(1, int(repeats))):
                _sync(device)
                start = time.perf_counter()
                for batch in batches:
                    transcribe_waveforms(asr, batch)
                _sync(device)
                times.append(time.perf_counter() - start)
            parameters = sum(p.numel() for p in asr.mods.asr_model.parameters())
    finally:
        torch.set_num_threads(threads)
    audio_seconds = sum(len(w) for w in wavs) / rate
    checkpoint_bytes = sum(
        os.path.getsize(os.path.join(experiment.checkpoint, name))
        for name in CHECKPOINT_FILES.values()
    )
    return {
        "parameters": int(parameters),
        "checkpoint_bytes": int(checkpoint_bytes),
        "rtf": statistics.median(times) / audio_seconds,
        "audio_seconds": audio_seconds,
    }


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
