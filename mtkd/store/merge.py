"""Finishing a store: its summary, and its parts merged into one file."""

import logging
import os

from tqdm import tqdm

from mtkd.store.format import StoreError, StoreOptions
from mtkd.store.reader import TeacherStore, format_summary, write_summary
from mtkd.store.writer import PartWriter
from mtkd.teachers import UttTargets

logger = logging.getLogger(__name__)


def report_store(folder, summary_file, merged_file=None, progress=True):
    """Prints the store summary and writes it to ``summary_file`` (JSON); then
    merges the parts into ``merged_file`` when one is given and no teacher is
    missing. A store that cannot be read yet (other parts still being written)
    gets a warning, and no stale summary is left behind."""
    try:
        store = TeacherStore(folder, allow_missing=True)
    except StoreError as err:
        logger.warning("The store cannot be read yet: %s", err)
        if os.path.exists(summary_file):
            os.remove(summary_file)
        return
    print(format_summary(write_summary(store, summary_file)))
    if merged_file is None:
        return
    if store.missing_teachers:
        logger.warning("Not merging: teachers %s missing", store.missing_teachers)
        return
    print(f"Merged store: {merge_store(folder, merged_file, progress)}")


def _stored_targets(store, split, utt_id):
    """One utterance's targets as writer input (N UttTargets), for merging."""
    got = store.get(split, utt_id)
    edits = store.edit_counts(split, utt_id)
    return [
        UttTargets(
            ctc_hyp=got["ctc_hyps"][k],
            att_dist=got["att_dist"][k],
            ctc_per=float(got["ctc_per"][k]),
            att_per=float(got["att_per"][k]),
            ctc_edits=int(edits["ctc"][k]),
            att_edits=int(edits["att"][k]),
        )
        for k in range(store.teacher_count)
    ]


def merge_store(folder, path, progress=True):
    """Writes every part of the store ``folder`` into one file ``path``.

    Reading the merged file costs one slice per dataset per utterance whatever
    the number of teachers. ``path`` must lie outside ``folder``. The
    unlabelled part, already one file, is not copied: a student that learns
    from unlabelled audio reads the store folder.
    """
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(folder):
        raise StoreError(
            f"The merged file {path} must not be inside the store folder "
            f"{folder} (it would be read as one more part)."
        )
    store = TeacherStore(folder)
    s = store.settings
    options = StoreOptions(
        s["temperature"], s["att_dist_dtype"], store.meta["options"].get("compression")
    )
    meta = dict(store.meta, teachers=store.teachers, merged_from=store.files)
    meta["list_size"] = max(store.teacher_indices) + 1
    meta["splits"] = {k: dict(v) for k, v in store.meta["splits"].items()}
    writer = PartWriter(path, meta, store.teacher_indices, options, len(s["labels"]))

    def copy_splits(disk_full):
        # The labelled splits: the unlabelled part is one file already.
        for split in store.meta["splits"]:
            ref_lens = store.reference_lengths(split)
            rows = int((ref_lens + 1).sum()) * store.teacher_count
            writer.begin_split(split, rows)
            for utt_id in tqdm(store.utterance_ids(split), disable=not progress):
                writer.append([utt_id], [_stored_targets(store, split, utt_id)])
                if disk_full:
                    raise disk_full[0]
            writer.end_split(split)

    return writer.write(copy_splits)
