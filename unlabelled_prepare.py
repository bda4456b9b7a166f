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
Hz, mono, finite samples, at least ``min_seconds`` long) and must not leak
evaluation data into training. A file is refused when

- it is an utterance of the labelled manifests: the same file once links are
  resolved, the same utterance ID, or the same samples (a copy under another
  name or in another format; the samples as decoded are compared, so a
  resampled or lossy copy is not caught);
- it is a recording of a speaker of an evaluation manifest (valid, test),
  unless ``--allow_eval_speakers_in_pool True`` says that this is meant.

One error lists every file that fails, and nothing is written. A file with no
sound (every sample the same value) is a warning naming it.

Which manifest is which: a ``--labelled`` manifest that
``timit_prepare_opts.json`` beside it records as the train output, or else
whose file name begins with ``train``, is a training set (its speakers may
be in the pool: ``timit_sa`` is their SA sentences); every other one is an
evaluation set. ``{data_root}`` in their ``wav`` paths is ``--data_folder``,
or else the corpus folder that ``timit_prepare_opts.json`` beside the
manifest records; without either nothing can be compared, and the run is
refused.

How speakers are identified. A pool file's speaker is, for ``timit_sa``, its
speaker folder; for a folder of audio, the folder holding the file (``NONE``
at the top); for a manifest, its ``spk_id``. The file is a recording of an
evaluation speaker when that speaker, the file's name or the names of the
two folders above it (split at ``_``, ``-``, ``.`` and spaces) is an
evaluation speaker's ID, whatever the case: ``TEST/DR1/FAKS0/SA1.WAV``,
``pool/faks0/x.wav`` and ``pool/FAKS0_SA1.wav`` all are FAKS0's. A file whose
samples are those of any recording in an evaluation speaker's folder of the
corpus (e.g. their SA1/SA2, which no manifest lists) is theirs too.

The manifest (``{utt_id: {"wav", "duration", "spk_id"}}``, no ``phn``) is
written under a temporary name and renamed; a second run with the same
options and an unchanged source and manifests skips itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import soundfile

from timit_prepare import (
    OPTS_FILENAME,
    TimitPrepError,
    _find_split_dirs,
    _problem_list,
    _write_json_atomic,
    check_audio_header,
    walk_following_links,
)

logger = logging.getLogger(__name__)

TIMIT_SA = "timit_sa"
AUDIO_SUFFIXES = (".wav", ".flac")
OPTS_SUFFIX = ".opts.json"
# 2: overlap by samples and by speaker, links resolved (issue 33); a manifest
# written by version 1 was not checked so and is prepared again.
OPTS_VERSION = 2
MIN_SECONDS = 0.25  # shorter recordings hold no phone sequence worth a target
ALLOW_EVAL_SPEAKERS = "--allow_eval_speakers_in_pool True"
_NAME_PARTS = re.compile(r"[_\-.\s]+")
NO_SPEAKER = ("", "none")  # spk_id of a file with no known speaker


def _timit_sa_files(data_folder):
    """[(utt_id, path, speaker)] of the SA1/SA2 files of TIMIT's TRAIN."""
    if not data_folder or not os.path.isdir(data_folder):
        raise TimitPrepError(
            f"source {TIMIT_SA} needs --data_folder, the TIMIT folder holding "
            f"TRAIN and TEST (got {data_folder!r})"
        )
    train = os.path.join(data_folder, _find_split_dirs(data_folder)["train"])
    found = []
    for dirpath, _, filenames in walk_following_links(train):
        for name in filenames:
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
    """[(utt_id, path, speaker)] of the audio files under ``folder`` (linked
    folders too): the ID is the relative path without extension, '/' replaced
    by '_'."""
    found = []
    for dirpath, _, filenames in walk_following_links(folder):
        for name in filenames:
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


@dataclass
class Recording:
    """A labelled-corpus recording that a pool file must not copy."""

    path: str
    what: str  # "utterance FAKS0_SI1 of OUT/valid.json", for messages
    listed: bool  # an utterance of a manifest (else a sibling in its folder)


@dataclass
class LabelledCorpus:
    """What the labelled manifests hold, to refuse any overlap with the pool."""

    ids: dict = field(default_factory=dict)  # utt_id -> manifest
    paths: dict = field(default_factory=dict)  # real path -> (utt_id, manifest)
    eval_speakers: dict = field(default_factory=dict)  # lower-case ID -> manifest
    recordings: list = field(default_factory=list)  # [Recording] to compare


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise TimitPrepError(f"{path} cannot be read as {what} ({err})") from None


def _prepare_opts_beside(manifest):
    """The options timit_prepare.py recorded beside ``manifest`` when they
    list it as one of their outputs, else None."""
    path = os.path.join(os.path.dirname(os.path.abspath(manifest)), OPTS_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            opts = json.load(f)
        outputs = {os.path.abspath(v): k for k, v in opts["outputs"].items()}
        return {"split": outputs[os.path.abspath(manifest)], **opts}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def is_training_manifest(manifest):
    """Whether ``manifest`` is a training set (its speakers may be in a pool):
    the train output of timit_prepare.py, or a file named ``train*``."""
    opts = _prepare_opts_beside(manifest)
    if opts is not None:
        return opts["split"] == "train"
    return os.path.basename(manifest).lower().startswith("train")


def _data_root(manifest, data_folder):
    """The folder that ``{data_root}`` stands for in ``manifest``."""
    if data_folder:
        return data_folder
    opts = _prepare_opts_beside(manifest)
    if opts is not None and opts.get("data_folder"):
        return opts["data_folder"]
    raise TimitPrepError(
        f"{manifest}: its wav paths begin with {{data_root}} (the corpus folder), "
        f"and neither --data_folder nor a {OPTS_FILENAME} beside it says which "
        "folder that is, so the pool cannot be compared with its recordings. "
        "Give --data_folder /path/to/TIMIT (the folder the manifests were "
        "prepared from)."
    )


def _audio_files_in(folder):
    """The audio files directly in ``folder`` (``.wav``, ``.WAV.wav``, ``.flac``)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [
        os.path.join(folder, n) for n in names if n.lower().endswith(AUDIO_SUFFIXES)
    ]


def read_labelled(manifests, data_folder):
    """A ``LabelledCorpus`` of the labelled manifests.

    The recordings to compare are every utterance of the manifests and every
    other audio file in an evaluation speaker's folder (their SA1/SA2, which
    the standard split leaves out). Raises TimitPrepError for a manifest that
    cannot be read or resolved, or whose files do not exist.
    """
    corpus = LabelledCorpus()
    for manifest in manifests:
        entries = _read_json(manifest, "a JSON manifest")
        if not isinstance(entries, dict):
            raise TimitPrepError(
                f"{manifest}: a manifest maps utterance IDs to entries"
            )
        evaluation = not is_training_manifest(manifest)
        missing, folders, data_root = [], {}, None
        for utt_id, entry in entries.items():
            if not isinstance(entry, dict) or "wav" not in entry:
                raise TimitPrepError(f"{manifest}: entry {utt_id!r} has no `wav` key")
            corpus.ids[utt_id] = manifest
            wav = str(entry["wav"])
            if "{data_root}" in wav:
                data_root = data_root or _data_root(manifest, data_folder)
                wav = wav.replace("{data_root}", data_root)
            if not os.path.isfile(wav):
                missing.append(wav)
                continue
            real = os.path.realpath(wav)
            corpus.paths[real] = (utt_id, manifest)
            speaker = str(entry.get("spk_id", "")) if evaluation else ""
            if speaker and speaker.lower() not in NO_SPEAKER:
                corpus.eval_speakers[speaker.lower()] = manifest
                folders[os.path.dirname(real)] = speaker
            corpus.recordings.append(
                Recording(wav, f"utterance {utt_id} of {manifest}", True)
            )
        if missing:
            raise TimitPrepError(
                f"{manifest}: {len(missing)} of its {len(entries)} recordings do "
                f"not exist (e.g. {missing[0]}), so the pool cannot be compared "
                "with them. Give --data_folder the corpus these manifests were "
                "prepared from (or prepare them again)."
            )
        for folder, speaker in sorted(folders.items()):
            for path in _audio_files_in(folder):
                if os.path.realpath(path) not in corpus.paths:
                    what = f"{path}, a recording of {speaker}, a speaker of {manifest}"
                    corpus.recordings.append(Recording(path, what, False))
    return corpus


def _read_samples(path):
    """([S, C] float32 samples, rate) as the audio reader decodes them."""
    return soundfile.read(path, dtype="float32", always_2d=True)


def samples_digest(samples):
    """sha256 (hex) of decoded samples ([S, C] float32): equal for a copy of a
    recording under another name or in another lossless format (SPHERE, RIFF,
    FLAC of the same 16-bit samples decode to the same floats)."""
    return hashlib.sha256(
        np.ascontiguousarray(samples, dtype="<f4").tobytes()
    ).hexdigest()


def copies_of_labelled(corpus, pool_digests):
    """{pool path: [Recording]} of the pool files whose samples are those of
    a labelled recording. ``pool_digests`` maps (sample count, digest) to the
    pool paths; only recordings of a pool file's length are decoded."""
    lengths = {n for n, _ in pool_digests}
    found = {}
    for recording in corpus.recordings:
        try:
            if soundfile.info(recording.path).frames not in lengths:
                continue
            samples, _ = _read_samples(recording.path)
        except (RuntimeError, OSError):
            continue  # not audio the pool could copy (timit_prepare names it)
        key = (len(samples), samples_digest(samples))
        for path in pool_digests.get(key, []):
            found.setdefault(path, []).append(recording)
    return found


def eval_speaker_of(corpus, path, speaker):
    """The lower-case ID of the evaluation speaker that a pool file's speaker,
    file name or one of the two folders above it names, or ""."""
    folder = os.path.dirname(path)
    names = [speaker, os.path.basename(path), os.path.basename(folder)]
    names.append(os.path.basename(os.path.dirname(folder)))
    for name in names:
        for part in _NAME_PARTS.split(name.lower()):
            if part in corpus.eval_speakers:
                return part
    return ""


def check_file(path, sample_rate, min_seconds):
    """(duration in seconds, list of problems, [S, C] float32 samples or None)
    of one unlabelled audio file.

    SPHERE files get the labelled corpus's header check (a cut-off copy is
    named); other formats (RIFF, FLAC) are checked by what the reader sees.
    """
    if _is_sphere(path):
        n_samples, problems = check_audio_header(path, True, sample_rate)
        if problems:
            return 0.0, problems, None
    try:
        samples, rate = _read_samples(path)
    except (RuntimeError, OSError) as err:
        reason = str(err).strip().splitlines()[-1][:120] if str(err).strip() else ""
        return 0.0, [f"the audio reader cannot read it ({reason})"], None
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
    return duration, problems, samples


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
    allow_eval_speakers=False,
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
        is one of their utterances (same file once links are resolved, same
        ID, same samples) is refused; so is a recording of a speaker of an
        evaluation manifest (see the module docstring).
    sample_rate : int
        The rate (Hz) every file must have.
    min_seconds : float
        Shorter files are refused.
    allow_eval_speakers : bool
        Accept recordings of valid or test speakers (a warning names them);
        copies of labelled utterances are refused all the same.

    Raises
    ------
    TimitPrepError
        Naming every file that cannot be used, and why; nothing is written.
    """
    files = list_sources(source, data_folder)
    opts = {
        "version": OPTS_VERSION,
        "source": source if source == TIMIT_SA else os.path.abspath(source),
        "data_folder": os.path.abspath(data_folder) if data_folder else None,
        "labelled": [os.path.abspath(p) for p in labelled],
        "labelled_files": _fingerprint([("", p, "") for p in labelled]),
        "sample_rate": int(sample_rate),
        "min_seconds": float(min_seconds),
        "allow_eval_speakers_in_pool": bool(allow_eval_speakers),
        "files": _fingerprint(files),
    }
    opts_path = save_json + OPTS_SUFFIX
    if os.path.isfile(save_json) and _same_opts(opts_path, opts):
        logger.info("unlabelled audio already prepared (%s); skipping", opts_path)
        with open(save_json, encoding="utf-8") as f:
            return len(json.load(f))
    corpus = read_labelled(labelled, data_folder)
    # {path: [why]} per kind of problem: each kind has its own advice.
    audio, leaks, speakers, other_problems = {}, {}, {}, {}
    entries, seen, silent, pool_digests = {}, {}, [], {}
    for utt_id, path, speaker in files:
        if utt_id in corpus.ids:
            _add(leaks, path, f"its utterance ID {utt_id} is in {corpus.ids[utt_id]}")
        other = corpus.paths.get(os.path.realpath(path))
        if other:
            _add(leaks, path, f"it is utterance {other[0]} of {other[1]}")
        if utt_id in seen:
            why = f"its utterance ID {utt_id} is also {seen[utt_id]}"
            _add(other_problems, path, why)
        eval_speaker = eval_speaker_of(corpus, path, speaker)
        if eval_speaker:
            _add(
                speakers, path,
                f"its speaker {eval_speaker.upper()} is a speaker of "
                f"{corpus.eval_speakers[eval_speaker]}",
            )  # fmt: skip
        if not os.path.isfile(path):
            _add(other_problems, path, "no such file")
            continue
        duration, audio_problems, samples = check_file(path, sample_rate, min_seconds)
        for why in audio_problems:
            _add(audio, path, why)
        if samples is not None:
            key = (len(samples), samples_digest(samples))
            pool_digests.setdefault(key, []).append(path)
            if len(samples) and samples.min() == samples.max():
                silent.append((path, [f"every sample is {samples.flat[0]:g}"]))
        seen[utt_id] = path
        entries[utt_id] = {"wav": path, "duration": duration, "spk_id": speaker}
    for path, recordings in copies_of_labelled(corpus, pool_digests).items():
        for recording in recordings:
            if os.path.realpath(recording.path) == os.path.realpath(path):
                continue  # the file itself, through a link: named above
            why = f"its samples are those of {recording.what}"
            _add(leaks if recording.listed else speakers, path, why)
    allowed = speakers if allow_eval_speakers else {}
    if allowed:
        speakers = {}
    kinds = {"audio": audio, "leaks": leaks, "speakers": speakers}
    kinds["other"] = other_problems
    if any(kinds.values()):
        raise TimitPrepError(_refusal(source, kinds, sample_rate))
    if allowed:
        logger.warning(
            "%d unlabelled audio file(s) are recordings of valid or test "
            "speakers, accepted as --allow_eval_speakers_in_pool says: results "
            "on those speakers are then not results on unseen speakers.\n%s",
            len(allowed),
            _problem_list(list(allowed.items())),
        )
    if silent:
        logger.warning(
            "%d unlabelled audio file(s) from %s hold no sound (every sample the "
            "same value); the teachers will label silence there. Leave them out "
            "of the source unless that is meant:\n%s",
            len(silent),
            source,
            _problem_list(silent),
        )
    if os.path.exists(opts_path):
        os.remove(opts_path)
    _write_json_atomic(save_json, dict(sorted(entries.items())))
    _write_json_atomic(opts_path, opts)
    hours = sum(e["duration"] for e in entries.values()) / 3600
    logger.info("wrote %s (%d utterances, %.2f h)", save_json, len(entries), hours)
    return len(entries)


def _add(problems, path, why):
    problems.setdefault(path, []).append(why)


def _refusal(source, kinds, sample_rate):
    """The error text for the pool files that cannot be used (``kinds``:
    {"audio", "leaks", "speakers", "other": {path: [why]}}): each file once
    with all its reasons, then what to do for each kind of reason."""
    merged = {}
    for problems in kinds.values():
        for path, why in problems.items():
            merged.setdefault(path, []).extend(why)
    advice = []
    if kinds["audio"]:
        advice.append(
            f"Convert them to {sample_rate} Hz mono, or leave them out of the source."
        )
    if kinds["leaks"]:
        advice.append(
            "Labelled, valid and test utterances, and copies of them under any "
            "name, never belong in the source: leave them out."
        )
    if kinds["speakers"]:
        advice.append(
            "Recordings of valid or test speakers make the results on those "
            "speakers look better than on unseen ones: leave them out, or, if "
            f"that is meant, run again with {ALLOW_EVAL_SPEAKERS}."
        )
    if kinds["other"]:
        advice.append("Point each entry at an existing file, with an ID of its own.")
    return (
        f"{len(merged)} unlabelled audio file(s) from {source} cannot be used "
        f"(nothing was written):\n{_problem_list(list(merged.items()))}\n"
        + " ".join(advice)
    )


def _same_opts(path, opts):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f) == opts
    except (OSError, ValueError):
        return False


def _flag(text):
    """argparse type of a True/False option (``True``, ``false``, ``1``...)."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


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
    parser.add_argument(
        "--allow_eval_speakers_in_pool", type=_flag, nargs="?", const=True,
        default=False, metavar="True",
        help="accept recordings of valid or test speakers in the source "
        "(refused by default: results on them would no longer be on unseen "
        "speakers)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    try:
        prepare_unlabelled(
            args.source, args.save_json, args.data_folder, args.labelled,
            args.sample_rate, args.min_seconds, args.allow_eval_speakers_in_pool,
        )  # fmt: skip
    except TimitPrepError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
