#!/usr/bin/env python3
"""Adds the seed-level tests to results files written before they existed.

    python tools/retest_results.py docs/kd_study/paper      # one folder
    python tools/retest_results.py --all                     # every committed one

Each comparison in a folder's ``results.json`` keeps its bootstrap (the
per-utterance edit counts of those runs were not kept, so it cannot be
redrawn by speaker) and gains ``seed_level``: the paired t-test and the exact
sign-flip test on its per-seed PER differences, which the file holds. Its
sentence is rewritten with ``describe`` (so its verdict follows the current
rule: the bootstrap and the seed-level t-test both below 0.05) and replaced,
word for word, in the ``RESULTS.md`` beside it. Running it twice changes
nothing the second time.
"""

import argparse
import glob
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mtkd import RecipeError  # noqa: E402
from mtkd_tools.results import atomic_write  # noqa: E402
from mtkd_tools.significance import describe, seed_level_tests  # noqa: E402

COMMITTED = ("docs/kd_study/**/results.json", "docs/demo_unlabelled/results.json")
RECORD_LISTS = ("comparisons", "confirmations")


def split_sentence(record):
    """(prefix, label) of a record's sentence: ``fresh seeds: `` and
    ``tea0 (the best teacher on valid)`` in "fresh seeds: X vs tea0 (the best
    teacher on valid): -0.31 PER points ..."."""
    pattern = rf"^(.*?){re.escape(record['name'])} vs (.+?): [+-]\d"
    match = re.match(pattern, record["sentence"])
    if not match:
        raise RecipeError(
            f"cannot read the comparison sentence of {record['name']}: "
            f"{record['sentence'][:80]!r}"
        )
    return match.group(1), match.group(2)


def retest_record(record):
    """The record with ``seed_level`` in its result and its sentence
    rewritten (a new dict); records without a result are returned as they are."""
    result = record.get("result")
    if not result:
        return record
    prefix, label = split_sentence(record)
    result = {**result, "seed_level": seed_level_tests(result["seed_differences"])}
    return {**record, "result": result, "sentence": prefix + describe(
        record["name"], label, result)}  # fmt: skip


def retest_folder(folder):
    """Rewrites ``results.json`` and ``RESULTS.md`` of one folder; returns the
    number of sentences that changed."""
    json_path = os.path.join(folder, "results.json")
    md_path = os.path.join(folder, "RESULTS.md")
    with open(json_path, encoding="utf-8") as f:
        payload = json.load(f)
    with open(md_path, encoding="utf-8") as f:
        page = f.read()
    replacements = []
    for key in RECORD_LISTS:
        if key not in payload:
            continue
        records = [retest_record(record) for record in payload[key] or []]
        replacements += [
            (old["sentence"], new["sentence"])
            for old, new in zip(payload[key] or [], records, strict=True)
            if old["sentence"] != new["sentence"]
        ]
        payload[key] = records
    # Longest first: a confirmation's sentence ("every seed: ...") can hold a
    # comparison's sentence whole.
    for old, new in sorted(set(replacements), key=lambda pair: -len(pair[0])):
        if old not in page:
            raise RecipeError(f"{md_path}: {old[:60]!r}... is not in the page.")
        page = page.replace(old, new)
    if "notes" in payload:
        table = dict(replacements)
        payload["notes"] = [table.get(note, note) for note in payload["notes"]]
    changed = len(set(replacements))
    indent = 2 if '\n  "' in open(json_path, encoding="utf-8").read(200) else 1
    atomic_write(json_path, json.dumps(payload, indent=indent, default=str) + "\n")
    atomic_write(md_path, page)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", help="folders with results.json")
    parser.add_argument("--all", action="store_true", help="every committed one")
    args = parser.parse_args(argv)
    folders = list(args.folders)
    if args.all:
        for pattern in COMMITTED:
            paths = glob.glob(os.path.join(REPO, pattern), recursive=True)
            folders += sorted(os.path.dirname(p) for p in paths)
    if not folders:
        parser.error("name a folder or give --all")
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "utterances.json")):
            print(f"{folder}: has per-utterance results; regenerate it instead")
            continue
        print(f"{folder}: {retest_folder(folder)} sentence(s) rewritten")


if __name__ == "__main__":
    try:
        main()
    except (RecipeError, OSError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
