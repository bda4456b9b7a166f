"""Teacher list files, teacher loading and the store's building blocks."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from mtkd.store.format import StoreError, manifest_info, part_file_name
from mtkd.store.reader import column_means
from mtkd.store.writer import select_teachers
from mtkd.teachers import (
    TeacherListError,
    check_teacher_list,
    encode_unpadded,
    greedy_ctc_hypothesis,
    load_teacher,
    read_teacher_list,
    teacher_forced_distributions,
)


def test_list_file_skips_comments_and_resolves_relative_paths(tmp_path):
    listing = tmp_path / "lists" / "teachers.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# ten teachers\n\nruns/tea0/model.ckpt  # the first\n/abs/tea1/model.ckpt\n"
    )
    assert read_teacher_list(str(listing)) == [
        (3, str(tmp_path / "lists" / "runs" / "tea0" / "model.ckpt")),
        (4, "/abs/tea1/model.ckpt"),
    ]


def test_list_file_errors_name_the_line(tmp_path):
    listing = tmp_path / "teachers.txt"
    listing.write_text("a/model.ckpt\n# comment\na/model.ckpt\n")
    with pytest.raises(TeacherListError, match="line 3.*already listed on line 1"):
        read_teacher_list(str(listing))
    listing.write_text("# nothing\n\n")
    with pytest.raises(TeacherListError, match="lists no teacher"):
        read_teacher_list(str(listing))
    with pytest.raises(TeacherListError, match="not found"):
        read_teacher_list(str(tmp_path / "absent.txt"))


def copy_run(model_ckpt, dest):
    """Copies a teacher's training run; returns the copy's model.ckpt path."""
    ckpt_dir = os.path.dirname(model_ckpt)
    run = os.path.dirname(os.path.dirname(ckpt_dir))
    shutil.copytree(run, dest)
    rel = os.path.relpath(model_ckpt, run)
    return os.path.join(dest, rel)


def test_label_encoder_mismatch_names_the_line(tiny_teachers, tmp_path):
    other = copy_run(tiny_teachers[1], tmp_path / "other")
    encoder = os.path.join(os.path.dirname(os.path.dirname(other)), "label_encoder.txt")
    text = open(encoder).read()
    # Swap the ids of two phones: same labels, another order.
    text = text.replace("'aa' => 3", "@").replace("'ae' => 4", "'aa' => 4")
    open(encoder, "w").write(text.replace("@", "'ae' => 3"))
    listing = tmp_path / "teachers.txt"
    listing.write_text(f"{tiny_teachers[0]}\n# the copy\n{other}\n")
    with pytest.raises(TeacherListError) as err:
        check_teacher_list(str(listing))
    message = str(err.value)
    assert "teachers.txt line 3" in message and other in message
    assert "labels differ at indices [3, 4]" in message
    assert "line 1" in message  # the teacher it was compared with


def test_missing_run_file_names_the_line(tiny_teachers, tmp_path):
    other = copy_run(tiny_teachers[0], tmp_path / "copy")
    os.remove(os.path.join(os.path.dirname(other), "normalize.ckpt"))
    listing = tmp_path / "teachers.txt"
    listing.write_text(f"{tiny_teachers[1]}\n{other}\n")
    with pytest.raises(TeacherListError, match=r"line 2 .*normalize\.ckpt"):
        check_teacher_list(str(listing))


def test_a_teacher_listed_twice_is_refused_by_checksum(tiny_teachers, tmp_path):
    first = tiny_teachers[0]
    run = os.path.dirname(os.path.dirname(os.path.dirname(first)))
    os.symlink(run, tmp_path / "linked")
    linked = os.path.join(tmp_path / "linked", os.path.relpath(first, run))
    copied = copy_run(first, tmp_path / "copy")
    listing = tmp_path / "teachers.txt"
    for other, how in (
        (linked, f"the same file ({os.path.realpath(first)}) through a link"),
        (copied, "a copy of it"),
    ):
        listing.write_text(f"{first}\n{tiny_teachers[1]}\n{other}\n")
        with pytest.raises(TeacherListError) as err:
            check_teacher_list(str(listing))
        message = str(err.value)
        assert message.startswith(
            f"{listing} line 3 ({other}): the same teacher as line 1 ({first}): "
            f"{how}, with the same weights (sha256 "
        )
        assert message.endswith("list each teacher once.")


def test_phn_set_mismatch_is_refused(tiny_teachers, tmp_path):
    listing = tmp_path / "teachers.txt"
    listing.write_text(f"{tiny_teachers[0]}\n")
    with pytest.raises(TeacherListError, match="phn_set 39.*uses phn_set 48"):
        check_teacher_list(str(listing), phn_set=48)


@torch.no_grad()
def test_padding_does_not_reach_the_teacher(tiny_teachers):
    """Encoder (equal lengths only) and teacher-forced decoder (masked) give the
    same outputs in a batch as alone."""
    torch.manual_seed(0)
    teacher = load_teacher(tiny_teachers[1], "cpu")
    feats = [torch.randn(n, 40) for n in (57, 80, 80, 31)]
    refs = [torch.randint(3, 42, (n,)) for n in (9, 4, 12, 6)]
    encoded = encode_unpadded(teacher, feats)
    alone = [encode_unpadded(teacher, [f])[0] for f in feats]
    for e, a in zip(encoded, alone, strict=True):
        assert torch.allclose(e, a, atol=1e-6)
    batched = teacher_forced_distributions(teacher, encoded, refs, 0, 1.0)
    for b in range(len(refs)):
        single = teacher_forced_distributions(teacher, [encoded[b]], [refs[b]], 0, 1.0)
        assert batched[b].shape == (len(refs[b]) + 1, 42)
        assert torch.allclose(batched[b], single[0], atol=1e-6)


def test_greedy_hypothesis_merges_repeats_and_drops_blanks():
    path = [2, 5, 5, 2, 5, 7, 7, 2, 2, 3]
    log_post = torch.full((len(path), 8), -9.0)
    log_post[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_ctc_hypothesis(log_post, blank_index=2).tolist() == [5, 5, 7, 3]


def test_manifest_fingerprint_ignores_where_the_corpus_lies(tmp_path):
    entries = {
        "FAKE0_SX3": {"wav": "/a/TRAIN/x.WAV", "duration": 1.5, "phn": "sil b sil"},
        "FAKE0_SX4": {"wav": "/a/TRAIN/y.WAV", "duration": 2.0, "phn": "sil d sil"},
    }
    here, moved = tmp_path / "here.json", tmp_path / "moved.json"
    here.write_text(json.dumps(entries))
    for entry in entries.values():
        entry["wav"] = entry["wav"].replace("/a/", "/elsewhere/")
    moved.write_text(json.dumps(dict(reversed(list(entries.items())))))
    info = manifest_info(str(here))
    assert info == manifest_info(str(moved))
    assert info["n_utt"] == 2 and info["hours"] == pytest.approx(3.5 / 3600)
    entries["FAKE0_SX4"]["phn"] = "sil t sil"
    moved.write_text(json.dumps(entries))
    assert manifest_info(str(moved))["fingerprint"] != info["fingerprint"]


def test_teacher_selection_and_part_names():
    assert select_teachers(4) == [0, 1, 2, 3]
    assert select_teachers(4, teacher_index=2) == [2]
    assert select_teachers(4, teacher_indices=[3, 0, 3]) == [0, 3]
    with pytest.raises(StoreError, match="0..3"):
        select_teachers(4, teacher_index=4)
    with pytest.raises(StoreError, match="not both"):
        select_teachers(4, 1, [2])
    assert part_file_name([3]) == "part-t003.h5"
    assert part_file_name(range(10)) == "part-t000-t009.h5"
    assert part_file_name([5, 0, 3]) == "part-t000_t003_t005.h5"
    assert part_file_name(range(0, 300, 2)).startswith("part-t000_n150_")


def test_column_means_skip_nan_and_say_none_where_a_column_has_no_value():
    # Teacher 0: (10 + 30) / 2; teacher 1: only 5; teacher 2: NaN throughout
    # (one teacher alone has no leave-one-out score).
    values = np.array([[10.0, np.nan, np.nan], [30.0, 5.0, np.nan]], dtype=np.float32)
    assert column_means(values) == [20.0, 5.0, None]
    assert column_means(np.zeros((0, 2), dtype=np.float32)) == [None, None]
