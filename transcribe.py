#!/usr/bin/env python3
"""Phone transcription of audio files with an exported model.

    python transcribe.py MODEL_DIR FILE_OR_FOLDER... [--json] [--batch_size N]
        [--device cpu|cuda] [--threads N]

``MODEL_DIR`` is a folder written by ``export_model.py``. Prints one line per
file, ``path<TAB>phones`` (or JSON lines with ``--json``), in the order the
files were given (folders: searched recursively for audio files, sorted by
path). Any file soundfile reads works (NIST SPHERE ``.WAV`` as in TIMIT, RIFF
``.wav``, FLAC, ...); audio at another sample rate is resampled, several
channels are averaged. Files are decoded in batches of similar length; the
default batch size is the one the run decoded its test set with, so the test
files give exactly the hypotheses behind the run's ``per_test.txt``.

Long recordings are cut into chunks of at most ``--chunk_seconds`` (default
10 s, longer than any TIMIT sentence) at their quietest points (pauses), each
chunk is decoded on its own and the phones are joined in order: decoding time
grows linearly with the length of the audio. ``--json`` says how many chunks
each file was decoded in.

Silence is not searched: a file without speech (found by its energy) is
transcribed as ``sil`` at once (0 chunks), and in a long recording every pause
of a second or more is one ``sil``; only the stretches of speech are decoded.

A missing or unreadable file is reported on stderr with its name; the other
files are still transcribed, and the exit status is then 1.
"""

import argparse
import json
import os
import sys

import soundfile
import torch

from mtkd.cluster import check_device
from mtkd.hparams import run_stage
from mtkd_tools.export import (
    AUDIO_EXTENSIONS,
    DEFAULT_CHUNK_SECONDS,
    SILENCE_TOKEN,
    batches_by_length,
    exported_batch_size,
    join_transcripts,
    load_exported,
    read_audio,
    speech_segments,
    split_at_silences,
    transcribe_waveforms,
)


def default_threads():
    """$OMP_NUM_THREADS when it is a whole number, else 1."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Transcribe audio files into phones with an exported model."
    )
    parser.add_argument("model_dir", help="folder written by export_model.py")
    parser.add_argument(
        "paths", nargs="+", metavar="FILE_OR_FOLDER", help="audio files or folders"
    )
    parser.add_argument(
        "--json", action="store_true", help='JSON lines: {"path", "phones", ...}'
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        help="files per batch (default: the run's test batch size)",
    )
    parser.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument(
        "--chunk_seconds",
        type=float,
        default=DEFAULT_CHUNK_SECONDS,
        help="recordings longer than this are cut at pauses into chunks of at "
        "most this many seconds, decoded one by one and joined, so decoding "
        f"time grows linearly with the audio (default: {DEFAULT_CHUNK_SECONDS:g})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch threads on the CPU (default: $OMP_NUM_THREADS, else 1: a "
        "small model's search is many small operations, which more threads "
        "slow down on a busy machine)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be 1 or more")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch_size must be 1 or more")
    if not args.chunk_seconds >= 1:
        parser.error("--chunk_seconds must be 1 or more")
    return args


def find_audio(paths, report):
    """The files to transcribe: files as given, folders searched recursively
    (audio extensions only, sorted). Missing paths are reported."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            in_folder = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                in_folder += [
                    os.path.join(root, name)
                    for name in sorted(files)
                    if name.lower().endswith(AUDIO_EXTENSIONS)
                ]
            if not in_folder:
                report(path, "no audio files in this folder")
            found += in_folder
        elif os.path.isfile(path):
            found.append(path)
        else:
            report(path, "no such file or folder")
    return list(dict.fromkeys(found))  # each file once


def decode(asr, files, batch_size, report, chunk_seconds=DEFAULT_CHUNK_SECONDS):
    """{path: (phones, seconds, chunks)} of the files that could be read and
    decoded (``chunks``: how many pieces were searched).

    A file without speech (``speech_segments``) is ``sil``, searched not at
    all. A file no longer than ``chunk_seconds`` with speech is decoded whole,
    in batches of similar length. A longer one is decoded in pieces: its
    stretches of speech (pauses of LONG_PAUSE_SECONDS or more left out, each
    a ``sil``), each cut at its quietest points into chunks of at most
    ``chunk_seconds`` (``split_at_silences``); the phones are joined in order.
    """
    rate = asr.hparams.sample_rate
    lengths = {}
    for path in files:
        try:
            info = soundfile.info(path)
            lengths[path] = info.frames * rate / info.samplerate
        except Exception as err:  # soundfile raises several types
            report(path, f"cannot read audio ({_reason(err)})")
    # Short files are read in batches of similar length (as the test loader);
    # a long one is read alone and its chunks are decoded in batches.
    short = [p for p in lengths if lengths[p] <= chunk_seconds * rate]
    results = {}
    for batch in batches_by_length([lengths[p] for p in short], batch_size):
        wavs = {}
        for path in (short[i] for i in batch):
            try:
                wav = read_audio(path, rate)
            except Exception as err:
                report(path, f"cannot read audio ({_reason(err)})")
                continue
            if speech_segments(wav, rate):
                wavs[path] = wav
            else:
                results[path] = (SILENCE_TOKEN, len(wav) / rate, 0)
        results.update(_decode_pieces(asr, wavs, rate, report))
    for path in (p for p in lengths if p not in short):
        try:
            wav = read_audio(path, rate)
        except Exception as err:
            report(path, f"cannot read audio ({_reason(err)})")
            continue
        long = _decode_long(asr, wav, rate, batch_size, report, path, chunk_seconds)
        if long is not None:
            phones, chunks = long
            results[path] = (phones, len(wav) / rate, chunks)
    return results


def _decode_long(asr, wav, rate, batch_size, report, path, chunk_seconds):
    """(phones, chunks searched) of a long recording (see ``decode``), or None
    when a chunk could not be decoded (reported)."""
    # The recording as pieces in order: (start, end) to search, or None for
    # a stretch without speech (transcribed as sil).
    layout, position = [], 0
    for start, end in speech_segments(wav, rate):
        if start > position:
            layout.append(None)
        layout += [
            (start + a, start + b)
            for a, b in split_at_silences(wav[start:end], rate, chunk_seconds)
        ]
        position = end
    if position < len(wav):
        layout.append(None)
    pieces = {bounds: wav[bounds[0] : bounds[1]] for bounds in layout if bounds}
    order = list(pieces)
    decoded = {}
    for batch in batches_by_length([len(pieces[k]) for k in order], batch_size):
        chunk = {order[i]: pieces[order[i]] for i in batch}
        decoded.update(_decode_pieces(asr, chunk, rate, report, path))
    if len(decoded) < len(pieces):
        return None
    texts = [decoded[bounds][0] if bounds else SILENCE_TOKEN for bounds in layout]
    return join_transcripts(texts), len(pieces)


def _decode_pieces(asr, wavs, rate, report, file=None):
    """{key: (phones, seconds, 1)} for a batch of waveforms {key: wav}."""
    try:
        return _decode_batch(asr, wavs, rate)
    except Exception:
        # One odd file (e.g. too short for the network) must not cost the
        # others their transcription: decode them one by one.
        out = {}
        for key, wav in wavs.items():
            try:
                out.update(_decode_batch(asr, {key: wav}, rate))
            except Exception as err:
                report(file or key, f"cannot transcribe ({_reason(err)})")
        return out


def _decode_batch(asr, wavs, rate):
    if not wavs:
        return {}
    phones = transcribe_waveforms(asr, list(wavs.values()))
    return {
        key: (text, len(wav) / rate, 1)
        for (key, wav), text in zip(wavs.items(), phones, strict=True)
    }


def _reason(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def main(argv):
    args = parse_args(argv)
    failed = []

    def report(path, why):
        failed.append(path)
        print(f"ERROR: {path}: {why}", file=sys.stderr, flush=True)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    torch.set_num_threads(args.threads)
    asr = load_exported(args.model_dir, device=device)
    files = find_audio(args.paths, report)
    batch_size = args.batch_size or exported_batch_size(asr)
    results = decode(asr, files, batch_size, report, args.chunk_seconds)
    for path in files:
        if path not in results:
            continue
        phones, seconds, chunks = results[path]
        if args.json:
            line = json.dumps(
                {
                    "path": path,
                    "phones": phones,
                    "duration": round(seconds, 3),
                    "chunks": chunks,
                },
                ensure_ascii=False,
            )
        else:
            line = f"{path}\t{phones}"
        print(line, flush=True)
    if failed:
        print(
            f"{len(set(failed))} path(s) could not be transcribed (see above); "
            f"{len(results)} file(s) transcribed.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main, sys.argv[1:]))
