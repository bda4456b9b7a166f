"""Reading a teacher store by utterance ID, and batching what it gives.

``TeacherStore`` opens a store folder (every complete part read as one store,
teachers in list order) or one part file (e.g. a merged one);
``collate_teacher_targets`` pads a batch of its ``get`` results for the loss.
"""

import json
import os

import h5py
import numpy as np
import torch

from mtkd.store.format import (
    LEAVE_ONE_OUT_ARRAYS,
    READ_ERRORS,
    UNLABELLED,
    StoreError,
    complete_part_files,
    damaged_part,
    manifest_info,
    partial_part_files,
    read_part_header,
    settings_differences,
    shared_settings,
    unlabelled_part_files,
    verify_part_checksum,
)

# Which teacher scores ``get`` gives on the unlabelled split: the PERs against
# the consensus of all teachers, or against the consensus of the others.
UNLABELLED_SCORES = ("consensus", "leave_one_out")


class TeacherStore:
    """Reads a store (a folder of parts, or one part file) by utterance ID.

    Arguments
    ---------
    path : str
        A store folder (every complete ``*.h5`` in it is a part) or one file.
    allow_missing : bool
        Read even when some teachers of the list have no part yet (otherwise
        an error names them).

    The per-utterance arrays and the (small) CTC hypotheses are read into
    memory at construction; ``get`` then reads one slice of distributions per
    part file. The HDF5 files are opened lazily, once per process, so a store
    made before a DataLoader's workers fork (or are spawned) is safe to use
    inside them.
    """

    def __init__(self, path, allow_missing=False):
        self.path = os.path.abspath(path)
        self.files = self._part_paths(self.path)
        headers = [read_part_header(p) for p in self.files]
        self.meta = headers[0][0]
        self._check_parts_agree(headers)
        self._order_teachers(headers, allow_missing)
        # Which part files hold each split: (file number, store positions of
        # its teachers in the part's order).
        labelled = list(enumerate(self._part_slots))
        self._split_meta = dict(self.meta["splits"])
        self._split_files = {split: labelled for split in self._split_meta}
        self.unlabelled_meta = None  # the unlabelled part's metadata, if any
        self._add_unlabelled_part()
        self._index = {s: self._read_index(s) for s in self.splits}
        self._pid = None
        self._handles = {}
        self._inherited = []

    def _add_unlabelled_part(self):
        """Adds the unlabelled part of a store folder, if it has one; it must
        hold exactly the store's teachers (same files) and share its labels,
        special indices, temperature and dtype."""
        if not os.path.isdir(self.path):
            return
        found = unlabelled_part_files(self.path)
        if len(found) > 1:
            raise StoreError(
                f"{self.path} holds {len(found)} unlabelled parts "
                f"({', '.join(found)}); keep the one of the current teacher list."
            )
        if not found:
            return
        path = found[0]
        meta, indices = read_part_header(path)
        problems = settings_differences(
            shared_settings(self.settings), shared_settings(meta["settings"])
        )
        if indices != self.teacher_indices:
            problems.append(
                f"it holds teachers {indices}, the store {self.teacher_indices}"
            )
        else:
            problems += [
                f"teacher {index} was {theirs['path']}, the store has {ours['path']}"
                for index, theirs, ours in zip(
                    indices, meta["teachers"], self.teachers, strict=True
                )
                if theirs["checksum"] != ours["checksum"]
            ]
        if problems:
            raise StoreError(
                f"The unlabelled part {path} does not belong to the store "
                f"{self.path}: {'; '.join(problems)}. Write it again: "
                "save_teachers.py with the same teacher list, --unlabelled and "
                "--overwrite True."
            )
        self.files.append(path)
        self.unlabelled_meta = meta
        self._split_meta[UNLABELLED] = meta["splits"][UNLABELLED]
        self._split_files[UNLABELLED] = [
            (len(self.files) - 1, list(range(len(indices))))
        ]

    # ------------------------------------------------------------ opening
    @staticmethod
    def _part_paths(path):
        if os.path.isfile(path):
            return [path]
        if not os.path.isdir(path):
            raise StoreError(f"No teacher store at {path} (no such file or folder).")
        files = complete_part_files(path)
        if not files:
            partial = partial_part_files(path)
            hint = f" (unfinished: {', '.join(partial)})" if partial else ""
            raise StoreError(
                f"{path} holds no complete part file{hint}: run save_teachers.py."
            )
        return files

    def _check_parts_agree(self, headers):
        first = headers[0][0]["settings"]
        for (meta, _), path in zip(headers[1:], self.files[1:], strict=True):
            diff = settings_differences(first, meta["settings"])
            if diff:
                raise StoreError(
                    f"Parts of {self.path} disagree: {self.files[0]} and {path} "
                    f"differ in {'; '.join(diff)}. Rewrite the stale part(s) with "
                    "save_teachers.py (--overwrite True), or remove them."
                )

    def _order_teachers(self, headers, allow_missing):
        """Teachers of all parts sorted by list index: (part, slot) per teacher."""
        owner = {}
        for p, (meta, indices) in enumerate(headers):
            for slot, index in enumerate(indices):
                if index in owner:
                    other = self.files[owner[index][0]]
                    raise StoreError(
                        f"Teacher {index} is in two parts: {other} and "
                        f"{self.files[p]}. Remove one of them."
                    )
                owner[index] = (p, slot, meta["teachers"][slot])
        self.teacher_indices = sorted(owner)
        self.teachers = [owner[i][2] for i in self.teacher_indices]
        list_size = max(meta["list_size"] for meta, _ in headers)
        self.missing_teachers = sorted(set(range(list_size)) - set(owner))
        if self.missing_teachers and not allow_missing:
            partial = partial_part_files(os.path.dirname(self.files[0]))
            hint = f" Unfinished parts: {', '.join(partial)}." if partial else ""
            raise StoreError(
                f"{self.path} lacks teachers {self.missing_teachers} of its list "
                f"({list_size} teachers): their parts are not written or not "
                f"finished.{hint} Run save_teachers.py for them (a killed run "
                "resumes when run again)."
            )
        # Per part, in the part's own teacher order: positions in the store.
        position = {index: k for k, index in enumerate(self.teacher_indices)}
        self._part_slots = [[position[i] for i in ind] for _, ind in headers]

    def _read_index(self, split):
        """Loads one split's small arrays of every part; aligns utterances."""
        parts = []
        names = ["ref_lens", "att_offsets", "ctc_offsets", "ctc_lens"]
        names += ["ctc_per", "att_per", "ctc_edits", "att_edits", "ctc_hyps"]
        if split == UNLABELLED:
            names.append("consensus_teacher")
            if self.has_leave_one_out:
                names += LEAVE_ONE_OUT_ARRAYS
        paths = []
        for p, slots in self._split_files[split]:
            paths.append(self.files[p])
            parts.append(_read_split_index(self.files[p], split, names))
            parts[-1].update(file=p, slots=slots)
        utt_ids = parts[0]["utt_ids"]
        rows = {u: i for i, u in enumerate(utt_ids)}
        for part, path in zip(parts, paths, strict=True):
            if set(part["utt_ids"]) != set(rows):
                missing = sorted(set(rows) - set(part["utt_ids"]))[:3]
                extra = sorted(set(part["utt_ids"]) - set(rows))[:3]
                raise StoreError(
                    f"Parts disagree on the {split} utterances: {paths[0]} "
                    f"and {path} (e.g. only in the first: {missing}, only in the "
                    f"second: {extra}). Rewrite the stale part."
                )
            # Row of each utterance (in the first part's order) in this part.
            own = {u: r for r, u in enumerate(part["utt_ids"])}
            part["row"] = np.asarray([own[u] for u in utt_ids], dtype=np.int64)
        return {"utt_ids": utt_ids, "rows": rows, "parts": parts}

    def verify(self):
        """Checks every part against its checksum file (a StoreError names a
        damaged one); returns how many parts had one to check. Reads every
        byte of the store once."""
        return sum(verify_part_checksum(path) for path in self.files)

    def _file(self, p):
        """Part ``p``'s h5py handle, opened once per process."""
        if self._pid != os.getpid():
            # Handles inherited through fork are never used (nor closed) here.
            self._inherited.append(self._handles)
            self._handles = {}
            self._pid = os.getpid()
        if p not in self._handles:
            self._handles[p] = h5py.File(self.files[p], "r")
        return self._handles[p]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_handles={}, _inherited=[], _pid=None)
        return state

    def close(self):
        """Closes this process's handles (they reopen on the next ``get``)."""
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}

    # ------------------------------------------------------------ metadata
    @property
    def teacher_count(self):
        """N, the number of teachers in the store."""
        return len(self.teacher_indices)

    @property
    def settings(self):
        return self.meta["settings"]

    @property
    def label_encoder_labels(self):
        """The shared labels: ``labels[i]`` is label id i (ind2lab)."""
        return list(self.settings["labels"])

    @property
    def blank_index(self):
        return self.settings["blank_index"]

    @property
    def bos_index(self):
        return self.settings["bos_index"]

    @property
    def eos_index(self):
        return self.settings["eos_index"]

    @property
    def temperature(self):
        return self.settings["temperature"]

    @property
    def splits(self):
        """The stored splits: train, valid, test, and ``unlabelled`` if the
        store has an unlabelled part."""
        return list(self._split_meta)

    @property
    def has_unlabelled(self):
        return UNLABELLED in self._split_meta

    @property
    def has_leave_one_out(self):
        """Does the unlabelled part hold leave-one-out scores and the
        disagreement (format version 3)?"""
        meta = self.unlabelled_meta
        return meta is not None and meta.get("format_version", 1) >= 3

    def unlabelled_array(self, name):
        """[U] or [U, N]: one of the unlabelled part's per-utterance arrays
        (``UNLABELLED_ARRAYS``: ``disagreement``, ``loo_teacher``, ...), in
        stored order; a StoreError names the part if it lacks it."""
        part = self._index[UNLABELLED]["parts"][0]
        if name not in part:
            raise StoreError(
                f"The unlabelled part of {self.path} has no {name!r}: it was "
                f"written with store format version "
                f"{self.unlabelled_meta.get('format_version', 1)}, before "
                "leave-one-out scores and the disagreement. Write it again: "
                "save_teachers.py with the same teacher list, --unlabelled and "
                "--overwrite True."
            )
        return part[name][part["row"]]

    @property
    def unlabelled_part(self):
        """Path of the unlabelled part file, or None."""
        if not self.has_unlabelled:
            return None
        return self.files[self._split_files[UNLABELLED][0][0]]

    def split_info(self, split):
        """What the store recorded of a split's manifest: ``fingerprint``,
        ``n_utt``, ``hours``, and for the unlabelled split the ``source`` it
        was written from (parts written since issue 33)."""
        return dict(self._split_meta[split])

    def pseudo_reference(self, utt_id):
        """The unlabelled utterance's consensus: [L] int64 label ids, the
        greedy CTC hypothesis of the teacher ``consensus_teacher`` names (the
        reference its targets were teacher-forced on)."""
        part = self._index[UNLABELLED]["parts"][0]
        row = part["row"][self._index[UNLABELLED]["rows"][utt_id]]
        k = int(part["consensus_teacher"][row])
        lens = part["ctc_lens"][row]
        start = int(part["ctc_offsets"][row]) + int(lens[:k].sum())
        tokens = part["ctc_hyps"][start : start + int(lens[k])]
        return torch.from_numpy(tokens.astype(np.int64))

    def consensus_teachers(self):
        """[U] int: per unlabelled utterance (stored order), the teacher whose
        hypothesis is its consensus."""
        part = self._index[UNLABELLED]["parts"][0]
        return part["consensus_teacher"][part["row"]]

    def reference_lengths(self, split):
        """[U] int: per utterance of ``split`` (stored order), the length of
        the reference its targets were made against (phones, no eos)."""
        part = self._index[split]["parts"][0]
        return part["ref_lens"][part["row"]]

    def utterance_ids(self, split):
        """The utterance IDs of ``split`` (manifest keys), in stored order."""
        return list(self._index[split]["utt_ids"])

    def __contains__(self, key):
        split, utt_id = key
        return utt_id in self._index[split]["rows"]

    def fingerprint(self, split):
        """sha256 of the split's manifest (see ``manifest_info``)."""
        if split == UNLABELLED:
            return self._split_meta[UNLABELLED]["fingerprint"]
        return self.settings["fingerprints"][split]

    def check_manifest(self, split, json_path):
        """Raises unless ``json_path`` has the utterances and phones of the store,
        and the store really holds every one of its utterances (the stored
        fingerprint alone does not show rows lost from a damaged file)."""
        if manifest_info(json_path)["fingerprint"] != self.fingerprint(split):
            raise StoreError(
                f"{json_path} does not match the {split} manifest the store "
                f"{self.path} was made from (utterances or phones differ): "
                "use the same corpus and phn_set, or remake the store."
            )
        with open(json_path, encoding="utf-8") as f:
            wanted = json.load(f)
        self.check_holds(split, wanted)

    def check_holds(self, split, utt_ids):
        """Raises a StoreError naming the store's file(s) and the first missing
        IDs unless every utterance of ``utt_ids`` is in ``split``."""
        if split not in self._index:
            raise StoreError(f"{self.path} has no {split!r} split.")
        held = self._index[split]["rows"]
        missing = [u for u in utt_ids if u not in held]
        if missing:
            files = ", ".join(self.files)
            raise StoreError(
                f"The teacher store ({files}) lacks {len(missing)} {split} "
                f"utterance(s) of this run's manifest, e.g. {', '.join(missing[:5])}."
                " The store is damaged: write it again with save_teachers.py "
                "(--overwrite True), or restore it."
            )

    def corpus_per(self, split):
        """{"ctc": [N], "att": [N]} corpus-level PER (%) of each teacher."""
        index = self._index[split]
        phones = max(int(index["parts"][0]["ref_lens"].sum()), 1)
        out = {}
        for kind in ("ctc", "att"):
            edits = np.zeros(self.teacher_count)
            for part in index["parts"]:
                edits[part["slots"]] = part[f"{kind}_edits"].sum(axis=0)
            out[kind] = [float(x) for x in 100.0 * edits / phones]
        return out

    def edit_counts(self, split, utt_id):
        """{"ctc": [N], "att": [N]} uncapped edit counts of one utterance."""
        index = self._index[split]
        i = index["rows"][utt_id]
        out = {"ctc": np.zeros(self.teacher_count, np.int64)}
        out["att"] = out["ctc"].copy()
        for part in index["parts"]:
            for kind in ("ctc", "att"):
                out[kind][part["slots"]] = part[f"{kind}_edits"][part["row"][i]]
        return out

    # ------------------------------------------------------------ targets
    def get(self, split, utt_id, scores="consensus"):
        """All teachers' targets for one utterance.

        Returns a dict (N teachers in list order, L reference phones, V labels):
        ``ctc_hyps`` list of N [H_k] int64 greedy CTC hypotheses;
        ``ctc_hyp_lens`` [N] int64; ``att_dist`` [N, L+1, V] float32
        teacher-forced distributions; ``ctc_per`` / ``att_per`` [N] float32
        per-utterance PER in percent; ``ref_len`` int L.

        ``scores`` (``UNLABELLED_SCORES``) matters on the unlabelled split
        only: "consensus", the PERs against the consensus of all teachers
        (the one the targets are teacher-forced on); "leave_one_out", each
        teacher's PERs against the consensus of the others.
        """
        if scores not in UNLABELLED_SCORES:
            raise ValueError(f"scores must be one of {UNLABELLED_SCORES}: {scores!r}")
        index = self._index[split]
        try:
            i = index["rows"][utt_id]
        except KeyError:
            raise KeyError(
                f"{utt_id!r} is not in the {split} split of the store"
            ) from None
        n, v = self.teacher_count, len(self.settings["labels"])
        ref_len = int(index["parts"][0]["ref_lens"][i])
        att, hyps = [None] * n, [None] * n
        ctc_per, att_per = np.zeros(n, np.float32), np.zeros(n, np.float32)
        for part in index["parts"]:
            p, slots = part["file"], part["slots"]
            row = part["row"][i]
            # The one HDF5 read: this part's distributions of the utterance.
            start = part["att_offsets"][row]
            block = self._read_rows(p, split, start, len(slots) * (ref_len + 1))
            block = torch.from_numpy(block.astype(np.float32))
            block = block.view(len(slots), ref_len + 1, v)
            start, lens = part["ctc_offsets"][row], part["ctc_lens"][row]
            flat = part["ctc_hyps"][start : start + lens.sum()].astype(np.int64)
            pieces = torch.split(torch.from_numpy(flat), lens.tolist())
            for j, slot in enumerate(slots):
                att[slot], hyps[slot] = block[j], pieces[j]
            loo = split == UNLABELLED and scores == "leave_one_out"
            if loo and "loo_ctc_per" not in part:
                self.unlabelled_array("loo_ctc_per")  # the error naming the part
            ctc_per[slots] = part["loo_ctc_per" if loo else "ctc_per"][row]
            att_per[slots] = part["loo_att_per" if loo else "att_per"][row]
        return {
            "ctc_hyps": hyps,
            "ctc_hyp_lens": torch.tensor([len(h) for h in hyps], dtype=torch.long),
            "att_dist": torch.stack(att),
            "ctc_per": torch.from_numpy(ctc_per),
            "att_per": torch.from_numpy(att_per),
            "ref_len": ref_len,
        }

    def _read_rows(self, p, split, start, count):
        """``count`` rows of part ``p``'s att_dist from ``start``, or a
        StoreError naming the file (damaged bytes surface here as h5py or
        decompression errors, inside a data-loading worker)."""
        try:
            return self._file(p)[split]["att_dist"][start : start + count]
        except READ_ERRORS as err:
            raise damaged_part(self.files[p], err) from None

    # ------------------------------------------------------------ summary
    def _leave_one_out_summary(self):
        """Per teacher, the mean over unlabelled utterances of its PERs
        against the others' consensus; the disagreement's mean and median.
        None where there is nothing to average (no utterance, or one
        teacher: no other teacher to score against)."""
        spread = self.unlabelled_array("disagreement")
        spread = spread[~np.isnan(spread)]
        return {
            "ctc_per": column_means(self.unlabelled_array("loo_ctc_per")),
            "att_per": column_means(self.unlabelled_array("loo_att_per")),
            "disagreement_mean": float(np.mean(spread)) if len(spread) else None,
            "disagreement_median": float(np.median(spread)) if len(spread) else None,
        }

    def summary(self):
        """A JSON-able summary: teachers, splits, counts, PERs, bytes on disk."""
        files = [{"file": p, "bytes": os.path.getsize(p)} for p in self.files]
        splits = {}
        for split in self.splits:
            info = self._split_meta[split]
            per = self.corpus_per(split)
            splits[split] = {
                "n_utt": len(self._index[split]["utt_ids"]),
                "hours": info.get("hours"),
                "fingerprint": self.fingerprint(split),
                "per": [
                    {"teacher": k, "ctc_per": c, "att_per": a}
                    for k, c, a in zip(
                        self.teacher_indices, per["ctc"], per["att"], strict=True
                    )
                ],
            }
            if (
                split == UNLABELLED
                and self.has_leave_one_out
                and self.teacher_count > 1
            ):
                splits[split]["leave_one_out"] = self._leave_one_out_summary()
        return {
            "store": self.path,
            "teachers": [
                {"index": k, "path": t["path"]}
                for k, t in zip(self.teacher_indices, self.teachers, strict=True)
            ],
            "missing_teachers": self.missing_teachers,
            "settings": {k: v for k, v in self.settings.items() if k != "labels"},
            "labels": self.label_encoder_labels,
            "splits": splits,
            "files": files,
            "bytes": sum(f["bytes"] for f in files),
        }


def column_means(values):
    """Per column of ``values`` [B, N], the mean of its non-NaN entries, or
    None where a column has none (no row, or NaN throughout)."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    counts = present.sum(0)
    sums = np.where(present, values, 0.0).sum(0)
    return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]


def _read_split_index(path, split, names):
    """One part's per-utterance arrays of ``split``, checked for completeness.

    A damaged store (a split group, a dataset or rows missing) is a StoreError
    naming the file and what is missing, here at start-up rather than an h5py
    KeyError inside a data-loading worker mid-epoch.
    """
    fix = (
        "The store is damaged: write this part again with save_teachers.py "
        "(--overwrite True), or restore the file."
    )
    try:
        return _read_split_arrays(path, split, names, fix)
    except StoreError:
        raise
    except READ_ERRORS as err:
        raise damaged_part(path, err) from None


def _read_split_arrays(path, split, names, fix):
    with h5py.File(path, "r") as f:
        if split not in f:
            raise StoreError(f"{path} has no {split!r} group. {fix}")
        g = f[split]
        wanted = [*names, "utt_ids", "att_dist"]
        missing = [n for n in wanted if n not in g]
        if missing:
            raise StoreError(
                f"{path} lacks the dataset(s) {', '.join(missing)} of the "
                f"{split!r} split. {fix}"
            )
        part = {n: g[n][()] for n in names}
        part["utt_ids"] = [u.decode() for u in g["utt_ids"][()]]
        att_rows = g["att_dist"].shape[0]
    n_utt = len(part["utt_ids"])
    short = [n for n in names if n != "ctc_hyps" and len(part[n]) != n_utt]
    if short:
        raise StoreError(
            f"{path}: in the {split!r} split, {', '.join(short)} do not have one "
            f"row per utterance ({n_utt} utterance IDs). {fix}"
        )
    if n_utt:
        n_teachers = part["ctc_lens"].shape[1] if part["ctc_lens"].ndim == 2 else 1
        ends = part["att_offsets"] + n_teachers * (part["ref_lens"] + 1)
        hyp_ends = part["ctc_offsets"] + part["ctc_lens"].reshape(n_utt, -1).sum(1)
        if int(ends.max()) > att_rows or int(hyp_ends.max()) > len(part["ctc_hyps"]):
            raise StoreError(
                f"{path}: the {split!r} split's att_dist or ctc_hyps is shorter "
                f"than its index says (cut off). {fix}"
            )
    return part


def collate_teacher_targets(items):
    """Pads a batch of ``TeacherStore.get`` results into tensors.

    Returns (B utterances, N teachers): ``ctc_hyps`` [B, N, Hmax] int64 (pad
    0), ``ctc_hyp_lens`` [B, N] int64, ``att_dist`` [B, N, Lmax+1, V] float32
    (pad 0), ``att_lens`` [B] int64 (L_b + 1), ``ctc_per`` / ``att_per``
    [B, N] float32 (percent).
    """
    b, n = len(items), len(items[0]["ctc_hyps"])
    v = items[0]["att_dist"].shape[-1]
    h_max = max(1, max(int(it["ctc_hyp_lens"].max()) for it in items))
    l_max = max(it["att_dist"].shape[1] for it in items)
    hyps = torch.zeros(b, n, h_max, dtype=torch.long)
    att = torch.zeros(b, n, l_max, v)
    for i, item in enumerate(items):
        for k, hyp in enumerate(item["ctc_hyps"]):
            hyps[i, k, : len(hyp)] = hyp
        att[i, :, : item["att_dist"].shape[1]] = item["att_dist"]
    return {
        "ctc_hyps": hyps,
        "ctc_hyp_lens": torch.stack([it["ctc_hyp_lens"] for it in items]),
        "att_dist": att,
        "att_lens": torch.tensor([it["att_dist"].shape[1] for it in items]),
        "ctc_per": torch.stack([it["ctc_per"] for it in items]),
        "att_per": torch.stack([it["att_per"] for it in items]),
    }


def format_summary(summary):
    """The store summary as a few readable lines (for the log and stdout)."""
    lines = [f"Teacher store {summary['store']}: {summary['bytes'] / 1e6:.2f} MB"]
    for t in summary["teachers"]:
        lines.append(f"  teacher {t['index']}: {t['path']}")
    if summary["missing_teachers"]:
        lines.append(f"  missing teachers: {summary['missing_teachers']}")
    for split, info in summary["splits"].items():
        hours = info["hours"] or 0.0
        lines.append(f"  {split}: {info['n_utt']} utterances, {hours:.3f} h")
        loo = info.get("leave_one_out")
        for k, p in enumerate(info["per"]):
            lines.append(
                f"    teacher {p['teacher']}: CTC PER {p['ctc_per']:.2f}  "
                f"attention PER (teacher-forced) {p['att_per']:.2f}"
                + (
                    f"  against the others' consensus: CTC {loo['ctc_per'][k]:.2f}"
                    f" attention {loo['att_per'][k]:.2f}"
                    if loo and loo["ctc_per"][k] is not None
                    else ""
                )
            )
        if loo and loo["disagreement_mean"] is not None:
            lines.append(
                f"    teachers' disagreement per utterance: mean "
                f"{loo['disagreement_mean']:.2f} %, median "
                f"{loo['disagreement_median']:.2f} %"
            )
    return "\n".join(lines)


def write_summary(store, path):
    """Writes ``store.summary()`` to ``path`` (JSON, atomically); returns it."""
    summary = store.summary()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(path + ".tmp", path)
    return summary
