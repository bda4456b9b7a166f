#!/usr/bin/env python3
"""How good is the teachers' consensus? PER of the medoid and of each
teacher's greedy CTC hypothesis against the true phones.

    python tools/consensus_quality.py --store results/store/store \\
        --valid results/store/valid.json --oracle pool_with_phones.json \\
        --out consensus_quality.json

On ``valid`` (labelled: the store holds every teacher's hypothesis, the
manifest the truth) the medoid is computed here from the stored hypotheses,
as save_teachers.py computes it on unlabelled audio: this is where a choice
between consensus methods belongs. ``--oracle`` (optional) is a manifest
with the true phones of the store's unlabelled utterances (the mini corpus's
pool keeps them): the consensus the student really learnt from is scored
against them, and the share of utterances each teacher's hypothesis was the
consensus of is reported.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mtkd.consensus import consensus, edit_distances  # noqa: E402
from mtkd.store import TeacherStore  # noqa: E402
from mtkd.store.format import UNLABELLED  # noqa: E402


def pers(store, split, truth, consensus_of):
    """{"teachers": [N] CTC PER %, "consensus": PER %, "phones": int}."""
    lab2id = {label: i for i, label in enumerate(store.label_encoder_labels)}
    n = store.teacher_count
    per_teacher, medoid, phones = [[] for _ in range(n)], [], 0
    for utt_id in store.utterance_ids(split):
        reference = [lab2id[p] for p in truth[utt_id]["phn"].split()]
        hyps = [h.tolist() for h in store.get(split, utt_id)["ctc_hyps"]]
        phones += len(reference)
        medoid.append((consensus_of(utt_id, hyps), reference))
        for k in range(n):
            per_teacher[k].append((hyps[k], reference))
    return {
        "teachers": [100 * int(edit_distances(p).sum()) / phones for p in per_teacher],
        "consensus": 100 * int(edit_distances(medoid).sum()) / phones,
        "phones": phones,
        "utterances": len(medoid),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the store folder")
    parser.add_argument("--valid", required=True, help="the store's valid.json")
    parser.add_argument("--oracle", help="true phones of the unlabelled split")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    store = TeacherStore(args.store)
    with open(args.valid, encoding="utf-8") as f:
        valid = json.load(f)
    result = {
        "store": os.path.abspath(args.store),
        "teachers": [t["path"] for t in store.teachers],
        "valid": pers(store, "valid", valid, lambda u, h: h[consensus(h)[0]]),
    }
    if args.oracle:
        with open(args.oracle, encoding="utf-8") as f:
            oracle = json.load(f)
        result[UNLABELLED] = pers(
            store, UNLABELLED, oracle,
            lambda u, h: store.pseudo_reference(u).tolist(),
        )  # fmt: skip
        chosen = np.bincount(store.consensus_teachers(), minlength=store.teacher_count)
        result[UNLABELLED]["consensus_share"] = (chosen / chosen.sum()).tolist()
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    for split in ("valid", UNLABELLED):
        if split in result:
            r = result[split]
            teachers = ", ".join(f"{p:.2f}" for p in r["teachers"])
            print(
                f"{split}: consensus PER {r['consensus']:.2f} %, teachers' CTC "
                f"PER {teachers} % ({r['utterances']} utterances)"
            )


if __name__ == "__main__":
    main()
