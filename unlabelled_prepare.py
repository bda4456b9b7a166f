#!/usr/bin/env python3
"""Manifest of audio without transcripts, for distillation on unlabelled audio.

    python unlabelled_prepare.py timit_sa OUT/unlabelled.json \\
        --data_folder /path/to/TIMIT \\
        --labelled OUT/train.json OUT/valid.json OUT/test.json
    python unlabelled_prepare.py /path/to/more/audio OUT/unlabelled.json --labelled ...
    python unlabelled_prepare.py other_manifest.json OUT/unlabelled.json --labelled ...

The teachers label such audio themselves (issue 23, docs/stages.md): only the
audio is needed. ``SOURCE`` is one of

- ``timit_sa``: the SA1/SA2 sentences of TIMIT's training speakers (924
  utterances), which the standard split leaves out (``--data_folder``);
- a folder: every ``.wav``, ``.flac`` or SPHERE ``.WAV`` file under it;
- a SpeechBrain JSON manifest whose entries have ``wav`` and ``duration``
  (``phn`` and ``wrd``, if present, are not copied).

Every file is checked as the labelled corpus is (readable, ``sample_rate``
Hz, mono, finite samples, at least ``min_seconds`` long) and must not be an
utterance of the labelled manifests (same file, or same utterance ID): one
error lists every file that fails, and nothing is written. The manifest
(``{utt_id: {"wav", "duration", "spk_id"}}``, no ``phn``) is written under a
temporary name and renamed; a second run with the same options and an
unchanged source skips itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys

import numpy as np
import soundfile

from timit_prepare import (
    TimitPrepError,
    _find_split_dirs,
    _problem_list,
    _write_json_atomic,
    check_audio_header,
)

logger = logging.getLogger(__name__)

TIMIT_SA = "timit_sa"
AUDIO_SUFFIXES = (".wav", ".flac")
OPTS_SUFFIX = ".opts.json"
MIN_SECONDS = 0.25  # shorter recordings hold no phone sequence worth a target


def _timit_sa_files(data_folder):
    """[(utt_id, path, speaker)] of the SA1/SA2 files of TIMIT's TRAIN."""
    if not data_folder or not os.path.isdir(data_folder):
        raise TimitPrepError(
            f"source {TIMIT_SA} needs --data_folder, the TIMIT folder holding "
            f"TRAIN and TEST (got {data_folder!r})"
        )
    train = os.path.join(data_folder, _find_split_dirs(data_folder)["train"])
    found = []
    for dirpath, dirnames, filenames in os.walk(train):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if stem.upper() in ("SA1", "SA2") and ext.lower() == ".wav":
                speaker = os.path.basename(dirpath).upper()
                found.append(
                    (f"{speaker}_{stem.upper()}", os.path.join(dirpath, name), speaker)
                )
    if not found:
        raise TimitPrepError(
            f"no SA1/SA2 .WAV files under {train}: is it TIMIT's training folder?"
        )
    return found


def _folder_files(folder):
    """[(utt_id, path, speaker)] of the audio files under ``folder``: the ID is
    the relative path without extension, '/' replaced by '_'."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(AUDIO_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.splitext(os.path.relpath(path, folder))[0]
            speaker = os.path.basename(dirpath) if dirpath != folder else "NONE"
            found.append((rel.replace(os.sep, "_"), path, speaker))
    if not found:
        raise TimitPrepError(
            f"no audio file ({', '.join(AUDIO_SUFFIXES)}) under {folder}"
        )
    return found


def _manifest_files(path, data_folder):
    """[(utt_id, path, speaker)] of a SpeechBrain manifest's entries."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as err:
        raise TimitPrepError(
            f"{path} cannot be read as a JSON manifest ({err})"
        ) from None
    if not isinstance(entries, dict):
        raise TimitPrepError(f"{path}: a manifest maps utterance IDs to entries")
    found = []
    for utt_id, entry in entries.items():
        if not isinstance(entry, dict) or "wav" not in entry:
            raise TimitPrepError(f"{path}: entry {utt_id!r} has no `wav` key")
        wav = str(entry["wav"])
        if "{data_root}" in wav:
            if not data_folder:
                raise TimitPrepError(
                    f"{path}: entry {utt_id!r} uses {{data_root}}; give --data_folder"
                )
            wav = wav.replace("{data_root}", data_folder)
        found.append((str(utt_id), wav, str(entry.get("spk_id", "NONE"))))
    return found


def list_sources(source, data_folder=None):
    """[(utt_id, path, speaker)] of ``source`` (see the module docstring)."""
    if source == TIMIT_SA:
        return _timit_sa_files(data_folder)
    if os.path.isdir(source):
        return _folder_files(source)
    if os.path.isfile(source) and source.lower().endswith(".json"):
        return _manifest_files(source, data_folder)
    raise TimitPrepError(
        f"unlabelled source {source!r} is neither {TIMIT_SA}, a folder of audio "
        "files nor a .json manifest"
    )


def _labelled(manifests, data_folder):
    """({utt_id: manifest}, {real path: (utt_id, manifest)}) of the labelled
    manifests, to refuse any overlap."""
    ids, paths = {}, {}
    for manifest in manifests:
        with open(manifest, encoding="utf-8") as f:
            entries = json.load(f)
        for utt_id, entry in entries.items():
            ids[utt_id] = manifest
            wav = str(entry["wav"]).replace("{data_root}", data_folder or "")
            paths[os.path.realpath(wav)] = (utt_id, manifest)
    return ids, paths


def check_file(path, sample_rate, min_seconds):
    """(duration in seconds, list of problems) of one unlabelled audio file.

    SPHERE files get the labelled corpus's header check (a cut-off copy is
    named); other formats (RIFF, FLAC) are checked by what the reader sees.
    """
    if _is_sphere(path):
        n_samples, problems = check_audio_header(path, True, sample_rate)
        if problems:
            return 0.0, problems
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as err:
        reason = str(err).strip().splitlines()[-1][:120] if str(err).strip() else ""
        return 0.0, [f"the audio reader cannot read it ({reason})"]
    problems = []
    if rate != sample_rate:
        problems.append(f"sample rate {rate} Hz, the recipe needs {sample_rate} Hz")
    if samples.shape[1] != 1:
        problems.append(f"{samples.shape[1]} channels, the recipe needs mono")
    duration = len(samples) / rate
    if duration < min_seconds:
        problems.append(f"{duration:.2f} s long, shorter than {min_seconds} s")
    if not np.isfinite(samples).all():
        problems.append("NaN or infinite samples")
    return duration, problems


def _is_sphere(path):
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"NIST_1A\n"
    except OSError:
        return False


def _fingerprint(files):
    digest = hashlib.sha256()
    for utt_id, path, _ in files:
        try:
            stat = os.stat(path)
            digest.update(
                f"{utt_id}\t{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
            )
        except OSError:
            digest.update(f"{utt_id}\t{path}\tmissing\n".encode())
    return digest.hexdigest()


def prepare_unlabelled(
    source,
    save_json,
    data_folder=None,
    labelled=(),
    sample_rate=16000,
    min_seconds=MIN_SECONDS,
):
    """Writes the unlabelled manifest ``save_json``; returns its entry count.

    Arguments
    ---------
    source : str
        ``"timit_sa"``, a folder of audio files, or a JSON manifest.
    save_json : str
        The manifest to write (``{utt_id: {"wav", "duration", "spk_id"}}``).
    data_folder : str, optional
        The TIMIT folder (``timit_sa``; ``{data_root}`` in manifests).
    labelled : list of str
        The labelled manifests (train, valid, test): an unlabelled file that
        is one of their utterances (same file or same ID) is refused.
    sample_rate : int
        The rate (Hz) every file must have.
    min_seconds : float
        Shorter files are refused.

    Raises
    ------
    TimitPrepError
        Naming every file that cannot be used, and why; nothing is written.
    """
    files = list_sources(source, data_folder)
    opts = {
        "source": source if source == TIMIT_SA else os.path.abspath(source),
        "data_folder": os.path.abspath(data_folder) if data_folder else None,
        "labelled": [os.path.abspath(p) for p in labelled],
        "sample_rate": int(sample_rate),
        "min_seconds": float(min_seconds),
        "files": _fingerprint(files),
    }
    opts_path = save_json + OPTS_SUFFIX
    if os.path.isfile(save_json) and _same_opts(opts_path, opts):
        logger.info("unlabelled audio already prepared (%s); skipping", opts_path)
        with open(save_json, encoding="utf-8") as f:
            return len(json.load(f))
    ids, paths = _labelled(labelled, data_folder)
    problems, entries, seen = [], {}, {}
    for utt_id, path, speaker in files:
        why = []
        if utt_id in ids:
            why.append(f"its utterance ID {utt_id} is in {ids[utt_id]}")
        other = paths.get(os.path.realpath(path))
        if other:
            why.append(f"it is utterance {other[0]} of {other[1]}")
        if utt_id in seen:
            why.append(f"its utterance ID {utt_id} is also {seen[utt_id]}")
        if not os.path.isfile(path):
            why.append("no such file")
            problems.append((path, why))
            continue
        duration, audio_problems = check_file(path, sample_rate, min_seconds)
        why += audio_problems
        if why:
            problems.append((path, why))
            continue
        seen[utt_id] = path
        entries[utt_id] = {"wav": path, "duration": duration, "spk_id": speaker}
    if problems:
        raise TimitPrepError(
            f"{len(problems)} unlabelled audio file(s) from {source} cannot be "
            "used (nothing was written):\n"
            f"{_problem_list(problems)}\n"
            f"Convert them to {sample_rate} Hz mono, or leave them out of the "
            "source; labelled, valid and test utterances never belong in it."
        )
    if os.path.exists(opts_path):
        os.remove(opts_path)
    _write_json_atomic(save_json, dict(sorted(entries.items())))
    _write_json_atomic(opts_path, opts)
    hours = sum(e["duration"] for e in entries.values()) / 3600
    logger.info("wrote %s (%d utterances, %.2f h)", save_json, len(entries), hours)
    return len(entries)


def _same_opts(path, opts):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f) == opts
    except (OSError, ValueError):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help=f"{TIMIT_SA}, a folder of audio, or a manifest")
    parser.add_argument("save_json", help="the unlabelled manifest to write")
    parser.add_argument("--data_folder", help="the TIMIT folder (timit_sa)")
    parser.add_argument(
        "--labelled", nargs="*", default=[], metavar="JSON",
        help="the labelled manifests whose utterances must not be reused",
    )  # fmt: skip
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--min_seconds", type=float, default=MIN_SECONDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    try:
        prepare_unlabelled(
            args.source, args.save_json, args.data_folder, args.labelled,
            args.sample_rate, args.min_seconds,
        )  # fmt: skip
    except TimitPrepError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
