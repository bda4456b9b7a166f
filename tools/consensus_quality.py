#!/usr/bin/env python3
"""How good is the teachers' consensus, and what does filtering by their
disagreement do to it? PER of the medoid and of each teacher's greedy CTC
hypothesis against the true phones, per disagreement threshold.

    python tools/consensus_quality.py --store results/store/store \\
        --valid results/store/valid.json --oracle pool_with_phones.json \\
        --thresholds 5 10 20 40 --out consensus_quality.json

On ``valid`` (labelled: the store holds every teacher's hypothesis, the
manifest the truth) the medoid and the teachers' disagreement are computed
here from the stored hypotheses, as save_teachers.py computes them on
unlabelled audio (ties by the teachers' valid PER): this is where a choice
between consensus methods, and of ``train_kd.py
--unlabelled_max_disagreement``, belongs. ``--oracle`` (optional) is a
manifest with the true phones of the store's unlabelled utterances (the mini
corpus's pool keeps them): the consensus the student really learnt from is
scored against them, with the disagreement the store holds (format 3; an
older store's is computed here), and the share of utterances each teacher's
hypothesis was the consensus of is reported.

For every threshold T of ``--thresholds`` and each split, the utterances a
student with ``--unlabelled_max_disagreement T`` keeps: how many, how much
audio (hours, and shares), and the consensus PER on them against the true
phones.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mtkd.consensus import consensus, disagreement, edit_distances  # noqa: E402
from mtkd.store import TeacherStore  # noqa: E402
from mtkd.store.format import UNLABELLED  # noqa: E402

THRESHOLDS = (5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)


def per_utterance(store, split, truth, choose):
    """Per utterance of ``split`` (stored order): ``ids`` [U],
    ``teacher_edits`` [U, N] and ``consensus_edits`` [U] against the true
    phones, ``phones`` [U], ``seconds`` [U] (the manifest's durations) and
    ``disagreement`` [U] (%).

    ``choose(utt_id, hyps)`` -> (the consensus hypothesis, its disagreement).
    """
    lab2id = {label: i for i, label in enumerate(store.label_encoder_labels)}
    pairs, medoid, rows = [], [], []
    for utt_id in store.utterance_ids(split):
        reference = [lab2id[p] for p in truth[utt_id]["phn"].split()]
        hyps = [h.tolist() for h in store.get(split, utt_id)["ctc_hyps"]]
        chosen, spread = choose(utt_id, hyps)
        pairs += [(h, reference) for h in hyps]
        medoid.append((chosen, reference))
        rows.append((len(reference), float(truth[utt_id]["duration"]), spread))
    phones, seconds, spread = np.asarray(rows, dtype=float).reshape(-1, 3).T
    return {
        "ids": list(store.utterance_ids(split)),
        "teacher_edits": edit_distances(pairs).reshape(len(rows), -1),
        "consensus_edits": edit_distances(medoid),
        "phones": phones,
        "seconds": seconds,
        "disagreement": spread,
    }


def pers(counts):
    """Corpus-level figures of ``per_utterance``'s counts: {"teachers": [N]
    CTC PER %, "consensus": PER %, "phones", "utterances"}."""
    phones = counts["phones"].sum()
    return {
        "teachers": (100 * counts["teacher_edits"].sum(0) / phones).tolist(),
        "consensus": float(100 * counts["consensus_edits"].sum() / phones),
        "phones": int(phones),
        "utterances": len(counts["phones"]),
    }


def utterance_rows(counts):
    """{utt_id: its counts}: what the corpus figures and every threshold's
    row are computed from, kept in the results file so that they can be
    recomputed (``phones``, ``seconds``, ``disagreement`` %,
    ``consensus_edits``, ``teacher_edits`` [N])."""
    return {
        utt_id: {
            "phones": int(counts["phones"][i]),
            "seconds": float(counts["seconds"][i]),
            "disagreement": float(counts["disagreement"][i]),
            "consensus_edits": int(counts["consensus_edits"][i]),
            "teacher_edits": [int(e) for e in counts["teacher_edits"][i]],
        }
        for i, utt_id in enumerate(counts["ids"])
    }


def threshold_table(counts, thresholds):
    """What each disagreement threshold keeps of a split, and its consensus.

    Arguments
    ---------
    counts : dict from ``per_utterance`` ([U] arrays).
    thresholds : list of T (%); an utterance is kept when its disagreement
        is at most T (``train_kd.py --unlabelled_max_disagreement T``).

    Returns
    -------
    list of dicts, one per T: ``max_disagreement``, ``utterances``,
    ``utterance_share``, ``hours``, ``audio_share``, and ``consensus_per``
    (%, against the true phones, over the kept utterances; None if none).
    """
    table = []
    for t in thresholds:
        kept = counts["disagreement"] <= t
        phones = counts["phones"][kept].sum()
        seconds = counts["seconds"][kept].sum()
        edits = counts["consensus_edits"][kept].sum()
        table.append(
            {
                "max_disagreement": float(t),
                "utterances": int(kept.sum()),
                "utterance_share": float(kept.mean()) if len(kept) else 0.0,
                "hours": float(seconds / 3600),
                "audio_share": float(seconds / max(counts["seconds"].sum(), 1e-9)),
                "consensus_per": float(100 * edits / phones) if phones else None,
            }
        )
    return table


def medoid_here(priority):
    """``choose`` for ``per_utterance``: the medoid and the disagreement
    computed from the stored hypotheses (as save_teachers.py does)."""

    def choose(utt_id, hyps):
        index, distances = consensus(hyps, priority)
        return hyps[index], disagreement(distances, len(hyps[index]))

    return choose


def stored_consensus(store):
    """``choose`` for the unlabelled split: the pseudo-reference the student
    learnt from, and the disagreement the store holds (computed here for a
    part written before format version 3)."""
    if not store.has_leave_one_out:
        fallback = medoid_here(None)
        return lambda u, h: (store.pseudo_reference(u).tolist(), fallback(u, h)[1])
    spread = dict(
        zip(
            store.utterance_ids(UNLABELLED),
            store.unlabelled_array("disagreement").tolist(),
            strict=True,
        )
    )
    return lambda u, h: (store.pseudo_reference(u).tolist(), spread[u])


def report(name, result):
    """The printed lines of one split."""
    teachers = ", ".join(f"{p:.2f}" for p in result["teachers"])
    lines = [
        f"{name}: consensus PER {result['consensus']:.2f} %, teachers' CTC PER "
        f"{teachers} % ({result['utterances']} utterances)",
        "  max disagreement  utterances kept  audio kept  consensus PER",
    ]
    for row in result["thresholds"]:
        per = "-" if row["consensus_per"] is None else f"{row['consensus_per']:.2f} %"
        lines.append(
            f"  {row['max_disagreement']:>14.1f} %  {row['utterances']:>7d} "
            f"({100 * row['utterance_share']:5.1f} %)  {row['hours']:.3f} h "
            f"({100 * row['audio_share']:5.1f} %)  {per}"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the store folder")
    parser.add_argument("--valid", required=True, help="the store's valid.json")
    parser.add_argument("--oracle", help="true phones of the unlabelled split")
    parser.add_argument(
        "--thresholds", nargs="+", type=float, default=list(THRESHOLDS),
        help="disagreement thresholds, %% (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    store = TeacherStore(args.store)
    with open(args.valid, encoding="utf-8") as f:
        valid = json.load(f)
    priority = store.corpus_per("valid")["ctc"]
    counts = {"valid": per_utterance(store, "valid", valid, medoid_here(priority))}
    if args.oracle:
        with open(args.oracle, encoding="utf-8") as f:
            oracle = json.load(f)
        counts[UNLABELLED] = per_utterance(
            store, UNLABELLED, oracle, stored_consensus(store)
        )
    result = {
        "store": os.path.abspath(args.store),
        "teachers": [t["path"] for t in store.teachers],
    }
    for split, split_counts in counts.items():
        result[split] = pers(split_counts)
        result[split]["thresholds"] = threshold_table(split_counts, args.thresholds)
        result[split]["per_utterance"] = utterance_rows(split_counts)
    if args.oracle:
        chosen = np.bincount(store.consensus_teachers(), minlength=store.teacher_count)
        result[UNLABELLED]["consensus_share"] = (chosen / chosen.sum()).tolist()
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    for split in counts:
        print("\n".join(report(split, result[split])))


if __name__ == "__main__":
    main()
