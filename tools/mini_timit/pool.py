"""A pool of extra speech beside a mini corpus: audio for distillation on
unlabelled data (issue 23).

``make_mini_pool(corpus_dir, pool_speakers)`` writes ``corpus_dir/POOL/`` in
TIMIT's layout (``POOL/DRn/FABC0/SI9000.WAV`` with ``.PHN``, ``.WRD``,
``.TXT``): new speakers, none of the corpus's, reading new sentences, none read
in TRAIN or TEST. ``timit_prepare.py`` never looks at ``POOL`` (it reads
``TRAIN`` and ``TEST`` only), so the labelled corpus is unchanged; give the
folder to ``unlabelled_prepare.py``, which takes the audio and nothing else.
The phones stay beside the audio only so that a study can train an *oracle*
(the same audio with its true phones): a real unlabelled pool has none.

The pool follows from the corpus's seed and options and its own count: the
same arguments give the same bytes, and a finished pool is reused. Speaker i
draws the same numbers whatever the count, so a pool of N speakers is the
first N of a larger one: asking an existing pool for more speakers adds the
new ones and keeps the old bytes (the study's 1x and 2x pools stay inside its
4x pool).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tools.mini_timit.corpus import (
    _DIALECTS,
    _LEAD_SILENCE_S,
    _TRAIL_SILENCE_S,
    CORE_TEST_SPEAKERS,
    DEV_SPEAKERS,
    MARKER_FILENAME,
    _assign_voices,
    _build,
    _check_flite,
    _fresh_speaker_id,
    _new_speaker,
    _plan,
    _read_marker,
    _resolve_counts,
    _Utterance,
    corpus_synthesiser,
)
from tools.mini_timit.errors import MiniTimitError
from tools.mini_timit.sentences import SentenceGenerator

logger = logging.getLogger(__name__)

POOL_FOLDER = "POOL"
POOL_MARKER = "MINI_POOL.json"
FIRST_POOL_SENTENCE = 9000  # SI numbers of the pool: SI9000, SI9001, ...
# numpy streams of the pool (the corpus uses 0-3): speakers, sentences,
# per-utterance rate and silences, noise.
_SPEAKER_STREAM, _SENTENCE_STREAM, _UTTERANCE_STREAM, _NOISE_STREAM = 10, 11, 12, 13
# ... and of the synthesiser choice, the Flite voices and their utterances.
_POOL_VOICE_STREAMS = (14, 15, 16)


def _corpus_options(corpus_dir):
    marker = _read_marker(Path(corpus_dir) / MARKER_FILENAME)
    if marker is None or "options" not in marker:
        raise MiniTimitError(
            f"{corpus_dir} holds no mini TIMIT corpus (no readable "
            f"{MARKER_FILENAME}): make it first with tools/make_mini_timit.py"
        )
    return marker["options"]


def plan_pool(options, pool_speakers, per_speaker):
    """The pool's speakers, disjoint from the corpus's speakers and sentences.

    ``options``: the corpus's options (its ``MINI_TIMIT.json``). Returns a
    list of ``_Speaker`` in folder ``POOL`` with role ``pool``, spoken by the
    corpus's synthesiser (``both``: half and half).
    """
    seed = options["seed"]
    counts = _resolve_counts(
        options["preset"],
        options["train_speakers"],
        options["dev_speakers"],
        options["test_speakers"],
    )
    corpus = _plan(seed, counts, options["sx_per_speaker"], options["si_per_speaker"])
    taken = {s.spk_id.lower() for s in corpus}
    taken |= set(DEV_SPEAKERS) | set(CORE_TEST_SPEAKERS)
    used = {u.text.lower() for s in corpus for u in s.utterances}
    rng = np.random.default_rng([seed, _SPEAKER_STREAM])
    gen = SentenceGenerator(np.random.default_rng([seed, _SENTENCE_STREAM]))
    number = FIRST_POOL_SENTENCE
    speakers = []
    for i in range(pool_speakers):
        spk_id = _fresh_speaker_id(rng, i, taken)
        speaker = _new_speaker(rng, spk_id, POOL_FOLDER, _DIALECTS[i % 8], "pool")
        for _ in range(per_speaker):
            while True:
                text = gen.sentence()
                if text.lower() not in used:
                    used.add(text.lower())
                    break
            speaker.utterances.append(_Utterance(f"SI{number}", text))
            number += 1
        urng = np.random.default_rng([seed, _UTTERANCE_STREAM, i])
        for utt in speaker.utterances:
            utt.rate = int(round(speaker.rate * urng.uniform(0.9, 1.1)))
            utt.espeak_seed = int(urng.integers(1, 2**31 - 1))
            utt.lead_s = float(urng.uniform(*_LEAD_SILENCE_S))
            utt.trail_s = float(urng.uniform(*_TRAIL_SILENCE_S))
        speakers.append(speaker)
    synthesiser, voices = corpus_synthesiser(options)
    return _assign_voices(speakers, seed, synthesiser, voices, _POOL_VOICE_STREAMS)


def make_mini_pool(corpus_dir, pool_speakers, per_speaker=8, num_workers=None):
    """Writes ``corpus_dir/POOL`` (see the module doc); returns its summary.

    Arguments
    ---------
    corpus_dir : str or path, a finished mini corpus (``make_mini_timit``).
    pool_speakers : int, new speakers (the demo corpus has 48 training
        speakers: 48 gives as much pool audio as training audio, 96 twice).
    per_speaker : int, sentences per pool speaker (8, as a training speaker's
        usable ones).
    num_workers : int or None, synthesis processes (does not change the pool).

    Returns {"folder", "options", "speakers", "utterances", "seconds",
    "reused", "wall_seconds", "synthesisers", "speaker_voices"}; the same is
    kept in ``POOL/MINI_POOL.json``.
    """
    t0 = time.time()
    if pool_speakers < 1 or per_speaker < 1:
        raise MiniTimitError("pool_speakers and per_speaker must be >= 1")
    corpus = _corpus_options(corpus_dir)
    options = {
        "corpus": corpus,
        "pool_speakers": int(pool_speakers),
        "per_speaker": int(per_speaker),
    }
    out = Path(corpus_dir) / POOL_FOLDER
    if out.exists():
        marker = _read_marker(out / POOL_MARKER)
        old = marker and marker.get("options")
        if old == options:
            logger.info("%s already holds this pool; reusing it", out)
            return {**marker["summary"], "reused": True}
        grows = old and {**old, "pool_speakers": pool_speakers} == options
        if not grows or old["pool_speakers"] > pool_speakers:
            raise MiniTimitError(
                f"{out} exists but was not made with these options "
                f"({old}, asked: {options}); delete it to make the pool again "
                "(a pool grows by more speakers, and only that)"
            )
        return _grow_pool(out, marker, options, num_workers, t0)
    speakers = plan_pool(corpus, pool_speakers, per_speaker)
    _check_flite(speakers)
    tmp = out.with_name(f"{POOL_FOLDER}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        built = _build(tmp, speakers, corpus["seed"], num_workers, _NOISE_STREAM)
        # _build writes under <root>/<folder>: lift POOL's contents up one level.
        inner = tmp / POOL_FOLDER
        summary = {
            "folder": str(out),
            "options": options,
            "speakers": len(speakers),
            "utterances": built["total_utterances"],
            "seconds": built["total_seconds"],
            "wall_seconds": round(time.time() - t0, 2),
            # who speaks: each speaker's synthesiser and voice
            "synthesisers": built["synthesisers"],
            "speaker_voices": built["speakers"][POOL_FOLDER],
        }
        with open(inner / POOL_MARKER, "w", encoding="utf-8") as f:
            json.dump({"options": options, "summary": summary}, f, indent=2)
            f.write("\n")
        os.rename(inner, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "pool written to %s: %d utterances, %.1f min", out,
        summary["utterances"], summary["seconds"] / 60,
    )  # fmt: skip
    return {**summary, "reused": False}


def _grow_pool(out, marker, options, num_workers, t0):
    """Adds the speakers ``marker``'s pool lacks to ``options['pool_speakers']``.

    The old speakers' files stay as they are; the new ones are synthesised
    with the numbers they draw in a pool made at once (``_build``'s
    ``first``), written beside, moved in, and the marker is rewritten last:
    an interrupted run leaves the old marker, and its stray new speaker
    folders are removed by the next run.
    """
    corpus = options["corpus"]
    speakers = plan_pool(corpus, options["pool_speakers"], options["per_speaker"])
    have = marker["options"]["pool_speakers"]
    known = {(s.dr, s.spk_id) for s in speakers[:have]}
    for folder in sorted(out.glob("DR*/*")):
        if (folder.parent.name, folder.name) not in known:
            shutil.rmtree(folder)  # left by an interrupted run
            if not any(folder.parent.iterdir()):
                folder.parent.rmdir()
    tmp = out.with_name(f"{POOL_FOLDER}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        built = _build(
            tmp, speakers[have:], corpus["seed"], num_workers, _NOISE_STREAM, have
        )
        for folder in sorted((tmp / POOL_FOLDER).glob("DR*/*")):
            (out / folder.parent.name).mkdir(exist_ok=True)
            os.rename(folder, out / folder.parent.name / folder.name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    old = marker["summary"]
    summary = {
        **old,
        "options": options,
        "speakers": len(speakers),
        "utterances": old["utterances"] + built["total_utterances"],
        "seconds": round(old["seconds"] + built["total_seconds"], 2),
        "grown_from": have,
        "wall_seconds": round(time.time() - t0, 2),
    }
    tmp_marker = out / (POOL_MARKER + ".tmp")
    with open(tmp_marker, "w", encoding="utf-8") as f:
        json.dump({"options": options, "summary": summary}, f, indent=2)
        f.write("\n")
    os.replace(tmp_marker, out / POOL_MARKER)
    logger.info(
        "pool %s grown from %d to %d speakers: %d utterances, %.1f min", out,
        have, len(speakers), summary["utterances"], summary["seconds"] / 60,
    )  # fmt: skip
    return {**summary, "reused": False}
