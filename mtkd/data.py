"""Data pipeline shared by the three stages: manifests -> datasets -> batches."""

import os

import speechbrain as sb
import torch
from speechbrain.dataio import audio_io
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.utils.distributed import run_on_main

from mtkd import RecipeError
from timit_prepare import PHONE_SETS, prepare_timit
from unlabelled_prepare import prepare_unlabelled

SPLITS = ("train", "valid", "test")
TIMIT_SAMPLE_RATE = 16000  # Hz; stages without a `sample_rate` key use it
SORTINGS = ("ascending", "descending", "random")
# What the supervised losses need; stages add their own keys to these.
BASE_OUTPUT_KEYS = ["id", "sig", "phn_encoded", "phn_encoded_eos", "phn_encoded_bos"]


def prepare_manifests(hparams):
    """Writes the TIMIT manifests named in ``hparams`` (main process only).

    Every stage prepares its own manifests so it can run on its own; the
    preparation skips itself when the same options were already prepared.
    """
    run_on_main(
        prepare_timit,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_json_train": hparams["train_annotation"],
            "save_json_valid": hparams["valid_annotation"],
            "save_json_test": hparams["test_annotation"],
            "phn_set": hparams["phn_set"],
            "skip_prep": hparams["skip_prep"],
            "sample_rate": hparams.get("sample_rate", TIMIT_SAMPLE_RATE),
        },
    )


def prepare_unlabelled_manifest(hparams):
    """Writes ``unlabelled_annotation`` from the source ``unlabelled`` (main
    process only): ``timit_sa``, a folder of audio or a manifest, checked like
    the corpus and refused where it overlaps train, valid or test, or holds
    valid or test speakers unless ``allow_eval_speakers_in_pool``
    (``unlabelled_prepare.py``). Skips itself when already prepared."""
    run_on_main(
        prepare_unlabelled,
        kwargs={
            "source": hparams["unlabelled"],
            "save_json": hparams["unlabelled_annotation"],
            "data_folder": hparams["data_folder"],
            "labelled": [hparams[f"{split}_annotation"] for split in SPLITS],
            "sample_rate": hparams.get("sample_rate", TIMIT_SAMPLE_RATE),
            "allow_eval_speakers": hparams.get("allow_eval_speakers_in_pool", False),
        },
    )


def load_unlabelled_dataset(hparams):
    """The unlabelled manifest as a dataset giving ``id`` and ``sig`` only,
    sorted by duration (its teachers' targets do not depend on the order)."""
    data = sb.dataio.dataset.DynamicItemDataset.from_json(
        json_path=hparams["unlabelled_annotation"],
        replacements={"data_root": hparams["data_folder"]},
    ).filtered_sorted(sort_key="duration")
    add_audio_pipeline([data], hparams.get("sample_rate", TIMIT_SAMPLE_RATE))
    sb.dataio.dataset.set_output_keys([data], ["id", "sig"])
    return data


def load_datasets(hparams):
    """Reads the three JSON manifests; sorts train as ``hparams["sorting"]`` says.

    Valid and test are always sorted by duration (less padding, same result).
    Returns ``{"train": ..., "valid": ..., "test": ...}`` of DynamicItemDataset.
    """
    sorting = hparams["sorting"]
    if sorting not in SORTINGS:
        raise RecipeError(f"sorting must be one of {SORTINGS}, got {sorting!r}")
    datasets = {}
    for split in SPLITS:
        data = sb.dataio.dataset.DynamicItemDataset.from_json(
            json_path=hparams[f"{split}_annotation"],
            replacements={"data_root": hparams["data_folder"]},
        )
        if split != "train" or sorting == "ascending":
            data = data.filtered_sorted(sort_key="duration")
        elif sorting == "descending":
            data = data.filtered_sorted(sort_key="duration", reverse=True)
        datasets[split] = data
    if sorting != "random":
        # A sorted dataset must not be shuffled again by the loader.
        hparams["train_dataloader_opts"]["shuffle"] = False
    else:
        hparams["train_dataloader_opts"]["shuffle"] = True
    return datasets


def build_label_encoder(hparams, path=None):
    """The label encoder of the recipe: blank/bos/eos, then the phone set sorted.

    Built from the phone inventory of ``phn_set``, not from the training data,
    so every run on every corpus (the mini corpus too, where a rare phone may be
    missing) gets the same labels in the same order. Saved to (or, when
    resuming, checked against) ``<save_folder>/label_encoder.txt``.
    """
    path = path or os.path.join(hparams["save_folder"], "label_encoder.txt")
    label_encoder = CTCTextEncoder()
    label_encoder.insert_bos_eos(
        bos_label="<bos>",
        eos_label="<eos>",
        bos_index=hparams["bos_index"],
        eos_index=hparams["eos_index"],
    )
    label_encoder.insert_blank(blank_label="<blank>", index=hparams["blank_index"])
    label_encoder.update_from_iterable(
        [PHONE_SETS[hparams["phn_set"]]], sequence_input=True
    )
    check_label_count(label_encoder, hparams["output_neurons"], path)
    label_encoder.expect_len(hparams["output_neurons"])
    if os.path.exists(path):
        saved = CTCTextEncoder()
        saved.load(path)
        if saved.lab2ind != label_encoder.lab2ind:
            raise RecipeError(
                f"{path} does not match phn_set {hparams['phn_set']} and the "
                "blank/bos/eos indices of this run: use a new output folder."
            )
    elif sb.utils.distributed.if_main_process():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        label_encoder.save(path + ".tmp")
        os.replace(path + ".tmp", path)
    return label_encoder


def check_label_count(label_encoder, output_neurons, path):
    """The model's output layer must have exactly one unit per label."""
    if len(label_encoder) != output_neurons:
        raise RecipeError(
            f"The label set ({path}) has {len(label_encoder)} labels (phones plus "
            f"blank/bos/eos) but output_neurons is {output_neurons}. Set "
            f"`--output_neurons {len(label_encoder)}` (42 for the 39-phone set, "
            "51 for 48 phones, 63 for 60, 64 for 61)."
        )


class AudioError(RecipeError):
    """An audio file of a manifest that cannot be used as it is."""


def load_audio(path, sample_rate, duration=None):
    """The waveform of one manifest entry: [samples] float32, as SpeechBrain's
    ``read_audio`` gives it, or an AudioError naming the file.

    The file must be readable, mono, at ``sample_rate`` Hz, hold samples
    that are all finite (a NaN trains to a loss that is not finite) and, when
    ``duration`` (seconds, from the manifest) is given, not shorter than it
    by more than 10 ms + 1 %: the corpus may have changed since preparation,
    and inside a data-loading worker a plain exception would end the epoch in
    a traceback that names no file.
    """
    fix = (
        "Replace the file with the one of the original corpus; data preparation "
        "(skip_prep False, in a new output folder) lists every such file."
    )
    try:
        audio, rate = audio_io.load(path)  # [channels, samples]
    except Exception as err:  # soundfile raises several types
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise AudioError(f"{path}: cannot read the audio ({reason}). {fix}") from None
    if audio.shape[0] != 1:
        raise AudioError(f"{path} has {audio.shape[0]} channels, not one. {fix}")
    if rate != sample_rate:
        raise AudioError(
            f"{path} is at {rate} Hz; the model expects {sample_rate} Hz. {fix}"
        )
    signal = audio[0]
    if len(signal) == 0:
        raise AudioError(f"{path} holds no audio samples. {fix}")
    if not torch.isfinite(signal).all():
        raise AudioError(
            f"{path} holds NaN or infinite samples: the file is damaged. {fix}"
        )
    if duration is not None:
        expected = float(duration) * rate
        if len(signal) < expected - 0.01 * rate - 0.01 * expected:
            raise AudioError(
                f"{path} holds {len(signal) / rate:.2f} s of audio, the manifest "
                f"says {float(duration):.2f} s: the file is cut off. {fix}"
            )
    return signal


def add_audio_pipeline(datasets, sample_rate=TIMIT_SAMPLE_RATE):
    """Adds ``sig`` (waveform, float32, samples at ``sample_rate``) to every
    dataset; audio that cannot be used is an AudioError naming the file."""

    @sb.utils.data_pipeline.takes("wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, duration):
        return load_audio(wav, sample_rate, duration)

    sb.dataio.dataset.add_dynamic_item(list(datasets), audio_pipeline)


def add_text_pipeline(datasets, label_encoder):
    """Adds the phone list and its encodings (plain, +eos, bos+) to every dataset."""

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides(
        "phn_list", "phn_encoded", "phn_encoded_eos", "phn_encoded_bos"
    )
    def text_pipeline(phn):
        phn_list = phn.strip().split()
        yield phn_list
        encoded = label_encoder.encode_sequence(phn_list)
        yield torch.LongTensor(encoded)
        yield torch.LongTensor(label_encoder.append_eos_index(encoded))
        yield torch.LongTensor(label_encoder.prepend_bos_index(encoded))

    sb.dataio.dataset.add_dynamic_item(list(datasets), text_pipeline)


def prepare_datasets(hparams, label_encoder_path=None):
    """The whole supervised pipeline: datasets with audio and labels.

    Returns (datasets dict, label encoder). Output keys are ``BASE_OUTPUT_KEYS``;
    a stage that needs more calls ``set_output_keys`` again.
    """
    datasets = load_datasets(hparams)
    label_encoder = build_label_encoder(hparams, label_encoder_path)
    add_text_pipeline(datasets.values(), label_encoder)
    add_audio_pipeline(datasets.values(), hparams.get("sample_rate", TIMIT_SAMPLE_RATE))
    sb.dataio.dataset.set_output_keys(list(datasets.values()), BASE_OUTPUT_KEYS)
    return datasets, label_encoder


def train_loader_kwargs(hparams, train_data, collate_fn=PaddedBatch):
    """Loader options for train: fixed batch size, or dynamic batching.

    The loader gets a generator of its own: each time an epoch's iterator
    starts, torch draws the workers' base seed from it (from the global
    generator otherwise, even without workers). A run resumed mid-epoch
    starts one iterator more than the uninterrupted run, and that draw must
    not shift the random stream restored from the checkpoint (mtkd/repro.py).
    """
    generator = torch.Generator().manual_seed(int(hparams.get("seed", 0)))
    if not hparams.get("dynamic_batching", False):
        return {
            **hparams["train_dataloader_opts"],
            "collate_fn": collate_fn,
            "generator": generator,
        }
    hop = hparams["feats_hop_size"]
    sampler = DynamicBatchSampler(
        train_data,
        length_func=lambda x: x["duration"] / hop,
        **hparams["dynamic_batch_sampler"],
    )
    num_workers = hparams["train_dataloader_opts"].get("num_workers", 0)
    return {
        "batch_sampler": sampler,
        "collate_fn": collate_fn,
        "num_workers": num_workers,
        "generator": generator,
    }
