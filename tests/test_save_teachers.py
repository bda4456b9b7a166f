"""Stage 2 end to end: save_teachers.py on the mini corpus with two tiny teachers.

Stores made here (module fixtures, CPU, one torch thread):
  A: both teachers in one file, batch size 5, train sorted by descending length.
  B: batch size 1, ascending.
  C: one part per teacher: teacher 0 with ``--teacher_index 0``, teacher 1 by a
     run that is killed halfway (``kill_after_batches.py``) and then run again
     (resume), with ``--merge``.
"""

import json
import os
import shutil

import h5py
import pytest
import torch
from conftest import REPO, run_script

import save_teachers
from mtkd.store import StoreError, TeacherStore, collate_teacher_targets
from mtkd.store.format import PARTIAL_SUFFIX
from mtkd.teachers import TeacherListError, load_teacher

YAML = os.path.join(REPO, "hparams", "save_teachers.yaml")
KILLER = os.path.join(REPO, "tests", "kill_after_batches.py")
SPLITS = ("train", "valid", "test")
# Two float16 roundings of a probability <= 1 differ by at most 2**-10.
F16_ATOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def args(corpus, teachers, out, *extra):
    return [
        "--data_folder", corpus, "--tea_models_dir", teachers,
        "--output_folder", str(out), "--device", "cpu", "--noprogressbar",
        *map(str, extra),
    ]  # fmt: skip


def save(corpus, teachers, out, *extra):
    """Runs save_teachers.py in this process (imports are paid once)."""
    save_teachers.main([YAML, *args(corpus, teachers, out, *extra)])
    return os.path.join(str(out), "store")


def save_subprocess(corpus, teachers, out, *extra, kill_after=None, check=True):
    """Runs save_teachers.py in a subprocess; ``kill_after``: SIGKILL it once
    that many batches are written (see kill_after_batches.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killer = [] if kill_after is None else [KILLER, str(kill_after)]
    return run_script(
        [*killer, "save_teachers.py", YAML, *args(corpus, teachers, out, *extra)],
        env=env,
        check=check,
    )


@pytest.fixture(scope="module")
def store_a(teacher_store):
    return teacher_store


@pytest.fixture(scope="module")
def store_b(mini_corpus, teacher_list, tmp_path_factory):
    out = tmp_path_factory.mktemp("store_b")
    return save(mini_corpus, teacher_list, out, "--batch_size", 1)


@pytest.fixture(scope="module")
def store_c(mini_corpus, teacher_list, tmp_path_factory):
    """Parts store, made through a kill and a resume; records what it saw."""
    out = tmp_path_factory.mktemp("store_c")
    opts = ["--batch_size", 5, "--sorting", "descending"]
    folder = save(mini_corpus, teacher_list, out, *opts, "--teacher_index", 0)
    part0 = os.path.join(folder, "part-t000.h5")
    seen = {"part0_mtime": os.path.getmtime(part0)}
    # All teachers, one part each: teacher 0 is done, teacher 1 gets killed.
    killed = save_subprocess(
        mini_corpus, teacher_list, out, *opts, "--teachers_per_part", 1,
        kill_after=3, check=False,
    )  # fmt: skip
    seen["killed_rc"] = killed.returncode
    seen["after_kill"] = sorted(os.listdir(folder))
    try:
        TeacherStore(folder)
    except StoreError as err:
        seen["read_error"] = str(err)
    resumed = save_subprocess(
        mini_corpus, teacher_list, out, *opts, "--teachers_per_part", 1,
        "--merge", True,
    )  # fmt: skip
    seen["resumed_log"] = resumed.stdout + resumed.stderr
    seen["part0_mtime_after"] = os.path.getmtime(part0)
    seen["folder"], seen["out"] = folder, str(out)
    return seen


def manifest(store, split):
    with open(os.path.join(os.path.dirname(store), f"{split}.json")) as f:
        return json.load(f)


def assert_same_targets(one, other):
    """Same utterances; equal hypotheses and PERs; float16-close distributions."""
    assert one.teacher_count == other.teacher_count
    for split in SPLITS:
        assert sorted(one.utterance_ids(split)) == sorted(other.utterance_ids(split))
        assert one.fingerprint(split) == other.fingerprint(split)
        for utt_id in one.utterance_ids(split):
            a, b = one.get(split, utt_id), other.get(split, utt_id)
            assert [h.tolist() for h in a["ctc_hyps"]] == [
                h.tolist() for h in b["ctc_hyps"]
            ], utt_id
            assert a["att_dist"].shape == b["att_dist"].shape
            assert torch.allclose(a["att_dist"], b["att_dist"], atol=F16_ATOL, rtol=0)
            assert torch.equal(a["ctc_per"], b["ctc_per"])
            assert torch.equal(a["att_per"], b["att_per"])


def test_targets_do_not_depend_on_batch_size_or_order(store_a, store_b):
    a, b = TeacherStore(store_a), TeacherStore(store_b)
    # Different batches and a different processing order ...
    assert a.utterance_ids("train") != b.utterance_ids("train")
    # ... same targets for every utterance.
    assert_same_targets(a, b)


def test_stored_targets_have_the_documented_shapes(store_a, teacher_list):
    store = TeacherStore(store_a)
    n, v = 2, len(store.label_encoder_labels)
    assert store.teacher_count == n and v == 42
    assert store.label_encoder_labels[:3] == ["<bos>", "<eos>", "<blank>"]
    assert (store.bos_index, store.eos_index, store.blank_index) == (0, 1, 2)
    assert store.temperature == 1.0
    for split in SPLITS:
        utts = manifest(store_a, split)
        assert set(store.utterance_ids(split)) == set(utts)
        for utt_id, entry in utts.items():
            got = store.get(split, utt_id)
            length = len(entry["phn"].split())
            assert got["att_dist"].shape == (n, length + 1, v)
            assert got["att_dist"].dtype == torch.float32
            sums = got["att_dist"].sum(-1)
            assert torch.allclose(sums, torch.ones_like(sums), atol=2e-3)
            assert len(got["ctc_hyps"]) == n
            for hyp in got["ctc_hyps"]:
                assert hyp.dtype == torch.int64
                assert not (hyp == store.blank_index).any()
            for per in (got["ctc_per"], got["att_per"]):
                assert per.shape == (n,) and (per >= 0).all() and (per <= 100).all()
    summary = json.load(
        open(os.path.join(os.path.dirname(store_a), "store_summary.json"))
    )
    assert [t["index"] for t in summary["teachers"]] == [0, 1]
    assert summary["splits"]["valid"]["n_utt"] == len(manifest(store_a, "valid"))
    assert summary["bytes"] == sum(os.path.getsize(p) for p in store.files)
    for entry in summary["splits"]["test"]["per"]:
        assert entry["ctc_per"] >= 0 and entry["att_per"] >= 0


def test_greedy_hypothesis_is_what_ctc_loss_kd_derives(
    store_a, tiny_teachers, mini_corpus, monkeypatch
):
    """ctc_loss_kd's own derivation (argmax, crop, filter_ctc_output), run on the
    full float32 posteriors of each utterance, gives the stored hypotheses."""
    import speechbrain as sb
    from speechbrain.nnet.losses import ctc_loss_kd

    from mtkd.model import make_features

    store = TeacherStore(store_a)
    utts = manifest(store_a, "valid")
    ids = sorted(utts)[:6]
    captured = {}

    def capture(log_probs, targets, input_lengths, target_lengths, *a, **k):
        captured["targets"], captured["lengths"] = targets, target_lengths
        return torch.zeros(())

    monkeypatch.setattr(torch.nn.functional, "ctc_loss", capture)
    for k, ckpt in enumerate(tiny_teachers):
        teacher = load_teacher(ckpt, "cpu")
        posts = []
        for utt_id in ids:
            path = utts[utt_id]["wav"].replace("{data_root}", mini_corpus)
            wav = sb.dataio.dataio.read_audio(path)
            with torch.no_grad():
                feats = make_features(**teacher.features)(wav[None])
                feats = teacher.normalizer(feats, torch.ones(1))
                logits = teacher.model.ctc_logits(teacher.model.encode(feats))
            posts.append(torch.log_softmax(logits[0], -1))
        # A padded batch of the unpadded posteriors; ctc_loss_kd crops each row.
        frames = torch.tensor([p.shape[0] for p in posts])
        batch = torch.zeros(len(posts), int(frames.max()), posts[0].shape[1])
        for b, p in enumerate(posts):
            batch[b, : len(p)] = p
        rel = frames / frames.max()
        ctc_loss_kd(batch, batch, rel, store.blank_index, "cpu")
        for b, utt_id in enumerate(ids):
            derived = captured["targets"][b, : captured["lengths"][b]].tolist()
            assert store.get("valid", utt_id)["ctc_hyps"][k].tolist() == derived


def test_killed_run_leaves_no_complete_part_and_resumes(store_c):
    assert store_c["killed_rc"] == -9  # SIGKILL, as a pre-empted job
    after = store_c["after_kill"]
    assert "part-t000.h5" in after
    assert "part-t001.h5" not in after  # nothing that reads as complete
    assert "part-t001.h5" + PARTIAL_SUFFIX in after
    assert "lacks teachers [1]" in store_c["read_error"]
    assert PARTIAL_SUFFIX in store_c["read_error"]
    # The re-run skipped the finished part and completed the other.
    assert "Skipping teachers [0]" in store_c["resumed_log"]
    assert store_c["part0_mtime"] == store_c["part0_mtime_after"]
    assert sorted(os.listdir(store_c["folder"])) == [
        "part-t000.h5", "part-t000.h5.sha256", "part-t001.h5", "part-t001.h5.sha256",
    ]  # fmt: skip


def test_store_in_parts_reads_as_one_made_at_once(store_a, store_c):
    parts = TeacherStore(store_c["folder"])
    assert len(parts.files) == 2 and parts.teacher_indices == [0, 1]
    assert_same_targets(parts, TeacherStore(store_a))
    merged = TeacherStore(os.path.join(store_c["out"], "teachers_merged.h5"))
    assert len(merged.files) == 1
    assert_same_targets(merged, parts)


def test_collate_pads_a_batch(store_a):
    store = TeacherStore(store_a)
    ids = store.utterance_ids("valid")[:3]
    items = [store.get("valid", u) for u in ids]
    batch = collate_teacher_targets(items)
    h_max = max(int(it["ctc_hyp_lens"].max()) for it in items)
    l_max = max(it["ref_len"] for it in items)
    assert batch["ctc_hyps"].shape == (3, 2, max(h_max, 1))
    assert batch["att_dist"].shape == (3, 2, l_max + 1, 42)
    for b, item in enumerate(items):
        length = item["ref_len"] + 1
        assert torch.equal(batch["att_dist"][b, :, :length], item["att_dist"])
        assert (batch["att_dist"][b, :, length:] == 0).all()
        for k in range(2):
            n = int(batch["ctc_hyp_lens"][b, k])
            assert torch.equal(batch["ctc_hyps"][b, k, :n], item["ctc_hyps"][k])
            assert (batch["ctc_hyps"][b, k, n:] == 0).all()
    assert batch["ctc_per"].shape == batch["att_per"].shape == (3, 2)


class _ById(torch.utils.data.Dataset):
    def __init__(self, store, ids):
        self.store, self.ids = store, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.store.get("train", self.ids[i])


def test_store_works_in_dataloader_workers(store_a):
    store = TeacherStore(store_a)
    ids = store.utterance_ids("train")[:8]
    expected = [store.get("train", u) for u in ids]  # opens a handle here first
    loader = torch.utils.data.DataLoader(
        _ById(store, ids),
        batch_size=4,
        num_workers=2,
        collate_fn=collate_teacher_targets,
    )
    batches = list(loader)
    again = collate_teacher_targets(expected[:4])
    assert torch.equal(batches[0]["att_dist"], again["att_dist"])
    assert torch.equal(batches[0]["ctc_hyps"], again["ctc_hyps"])


def test_missing_checkpoint_names_the_list_line(mini_corpus, tiny_teachers, tmp_path):
    listing = tmp_path / "teachers.txt"
    listing.write_text(f"# teachers\n{tiny_teachers[0]}\n\nnowhere/model.ckpt\n")
    with pytest.raises(TeacherListError, match=r"teachers\.txt line 4") as err:
        save(mini_corpus, str(listing), tmp_path / "out")
    assert os.path.join(str(tmp_path), "nowhere", "model.ckpt") in str(err.value)


def test_existing_store_is_not_overwritten_silently(store_a, mini_corpus, teacher_list):
    out = os.path.dirname(store_a)
    with pytest.raises(StoreError) as err:
        save(mini_corpus, teacher_list, out, "--temperature", 2)
    message = str(err.value)
    assert "part-t000-t001.h5" in message and "temperature" in message
    assert "--overwrite True" in message
    # Nothing was touched: the store still reads as before.
    assert TeacherStore(store_a).temperature == 1.0


def test_overwrite_replaces_a_part_and_parts_must_agree(
    store_c, mini_corpus, teacher_list, tmp_path
):
    out = tmp_path / "copy"
    shutil.copytree(store_c["out"], out)
    store = save(
        mini_corpus, teacher_list, out, "--batch_size", 5, "--teacher_index", 0,
        "--temperature", 2, "--overwrite", True,
    )  # fmt: skip
    # Teacher 0 was rewritten at temperature 2; teacher 1's part still has 1.
    with pytest.raises(StoreError, match="disagree") as err:
        TeacherStore(store)
    message = str(err.value)
    assert "part-t000.h5" in message and "part-t001.h5" in message
    assert "temperature" in message


def test_parts_with_other_utterances_or_the_same_teacher_are_rejected(
    store_a, store_c, tmp_path
):
    folder = tmp_path / "bad"
    shutil.copytree(store_c["folder"], folder)
    with h5py.File(folder / "part-t001.h5", "r+") as f:
        ids = [u.decode() for u in f["valid/utt_ids"][()]]
        ids[0] = "FAKE0_SX999"
        del f["valid/utt_ids"]
        f["valid"].create_dataset("utt_ids", data=ids, dtype=h5py.string_dtype())
    with pytest.raises(StoreError, match="valid utterances") as err:
        TeacherStore(str(folder))
    assert "part-t000.h5" in str(err.value) and "part-t001.h5" in str(err.value)
    # A part holding a teacher that another part holds too.
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(os.path.join(store_a, "part-t000-t001.h5"), dup)
    shutil.copy(os.path.join(store_c["folder"], "part-t000.h5"), dup)
    with pytest.raises(StoreError, match="Teacher 0 is in two parts"):
        TeacherStore(str(dup))
