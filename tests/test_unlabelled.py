"""Distillation on audio without transcripts (issue 23), end to end on the tiny
corpus: its 12 SA1/SA2 utterances (``--unlabelled timit_sa``) are the
unlabelled audio. The store's unlabelled part, its consensus and PERs; the
student trained on labelled + unlabelled; the mixed objective; bad input."""

import functools
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch
from conftest import REPO, run_script
from test_save_teachers import YAML as SAVE_YAML
from test_train_kd import SMALL_STUDENT, run_kd

import save_teachers
from mtkd import RecipeError
from mtkd.brain import Predictions
from mtkd.consensus import consensus, error_rates_against
from mtkd.distill import KDBrain
from mtkd.store import StoreError, TeacherStore
from mtkd.store.format import UNLABELLED, unlabelled_part_files
from mtkd.store.merge import merge_store

KD_YAML = os.path.join(REPO, "hparams/train_kd.yaml")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(corpus, teachers, out, store, *extra):
    save_teachers.main(
        [SAVE_YAML, "--data_folder", corpus, "--tea_models_dir", teachers,
         "--output_folder", str(out), "--store_folder", store, "--device", "cpu",
         "--noprogressbar", "--batch_size", "5", "--sorting", "descending",
         *map(str, extra)]
    )  # fmt: skip


@pytest.fixture(scope="module")
def unlabelled_store(mini_corpus, teacher_list, teacher_store, tmp_path_factory):
    """A copy of the session's store, to which the unlabelled part is added
    by the same command with ``--unlabelled timit_sa`` (batch 5)."""
    root = tmp_path_factory.mktemp("unlabelled_store")
    store = str(root / "store")
    shutil.copytree(teacher_store, store)
    labelled_part = os.path.join(store, "part-t000-t001.h5")
    before = sha256(labelled_part)
    save(mini_corpus, teacher_list, root / "out", store, "--unlabelled", "timit_sa")
    (part,) = unlabelled_part_files(store)
    seen = {"labelled_before": before, "labelled_after": sha256(labelled_part)}
    seen["part_mtime"] = os.path.getmtime(part)
    save(mini_corpus, teacher_list, root / "out", store, "--unlabelled", "timit_sa")
    seen["part_mtime_again"] = os.path.getmtime(part)
    return store, root, seen


def test_unlabelled_part_holds_every_sa_utterance_and_reuses_the_labelled_parts(
    unlabelled_store,
):
    store_path, root, seen = unlabelled_store
    store = TeacherStore(store_path)
    assert store.has_unlabelled
    assert store.splits == ["train", "valid", "test", UNLABELLED]
    ids = store.utterance_ids(UNLABELLED)
    assert len(ids) == 12  # 6 training speakers x SA1, SA2
    assert all(u.endswith(("_SA1", "_SA2")) for u in ids)
    with open(root / "out" / "unlabelled.json") as f:
        manifest = json.load(f)
    assert sorted(manifest) == sorted(ids)
    assert all("phn" not in entry for entry in manifest.values())
    # The labelled part is reused byte for byte; a second run skips the part.
    assert seen["labelled_before"] == seen["labelled_after"]
    assert seen["part_mtime"] == seen["part_mtime_again"]
    assert store.verify() == 2  # both parts have their checksum


def test_pseudo_reference_is_the_medoid_and_pers_are_against_it(unlabelled_store):
    store = TeacherStore(unlabelled_store[0])
    n_labels = len(store.label_encoder_labels)
    chosen = store.consensus_teachers()
    ref_lens = store.reference_lengths(UNLABELLED)
    utt_ids = store.utterance_ids(UNLABELLED)
    assert chosen.shape == ref_lens.shape == (len(utt_ids),)
    for row, utt_id in enumerate(utt_ids):
        got = store.get(UNLABELLED, utt_id)
        hyps = [h.tolist() for h in got["ctc_hyps"]]
        index, _ = consensus(hyps)
        reference = store.pseudo_reference(utt_id).tolist()
        assert reference == hyps[index]
        assert int(chosen[row]) == index
        assert int(ref_lens[row]) == len(reference)
        # Teacher-forced on the consensus: L + 1 rows per teacher, each a
        # distribution; CTC PERs are each hypothesis's error rate against it.
        assert got["ref_len"] == len(reference)
        assert tuple(got["att_dist"].shape) == (2, len(reference) + 1, n_labels)
        sums = got["att_dist"].sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-2)
        expected = error_rates_against(hyps, reference)
        assert np.allclose(got["ctc_per"].numpy(), expected, atol=1e-4)
        assert float(got["ctc_per"][index]) == 0.0


def test_an_array_task_leaves_the_unlabelled_part_to_a_full_run(
    mini_corpus, teacher_list, teacher_store, tmp_path, capsys
):
    store = str(tmp_path / "store")
    shutil.copytree(teacher_store, store)
    save(mini_corpus, teacher_list, tmp_path / "out", store,
         "--unlabelled", "timit_sa", "--teacher_index", "0")  # fmt: skip
    assert unlabelled_part_files(store) == []
    assert "needs every teacher in one run" in capsys.readouterr().out


def test_a_version_1_store_still_reads(teacher_store, tmp_path):
    store = str(tmp_path / "store")
    shutil.copytree(teacher_store, store)
    with h5py.File(os.path.join(store, "part-t000-t001.h5"), "a") as f:
        f.attrs["format_version"] = 1
    old = TeacherStore(store)
    assert not old.has_unlabelled and old.splits == ["train", "valid", "test"]


def test_an_unlabelled_part_of_other_teachers_is_refused(
    unlabelled_store, teacher_store, tmp_path
):
    store = str(tmp_path / "store")
    shutil.copytree(teacher_store, store)
    (part,) = unlabelled_part_files(unlabelled_store[0])
    shutil.copy(part, store)
    with h5py.File(os.path.join(store, os.path.basename(part)), "a") as f:
        meta = json.loads(f["meta_json"][()])
        meta["teachers"][1]["checksum"] = "0" * 64
        del f["meta_json"]
        f.create_dataset("meta_json", data=json.dumps(meta))
    with pytest.raises(StoreError, match=r"does not belong to the store.*teacher 1"):
        TeacherStore(store)


@pytest.fixture(scope="module")
def mixed_runs(mini_corpus, unlabelled_store, tmp_path_factory):
    """Students on train + the SA utterances: KD (weighted) and self-training."""
    root = tmp_path_factory.mktemp("mixed")
    store = unlabelled_store[0]
    common = ["--pretrain", "False", "--unlabelled", "timit_sa", *SMALL_STUDENT]
    return {
        "kd": run_kd(mini_corpus, store, root / "kd", "--strategy", "weighted",
                     "--alpha", "0.5", *common),
        "self": run_kd(mini_corpus, store, root / "self", "--alpha", "0",
                       "--unlabelled_alpha", "0", *common),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["kd", "self"])
def test_student_trains_on_labelled_and_unlabelled_and_records_it(
    mixed_runs, unlabelled_store, name
):
    out = mixed_runs[name]
    with open(os.path.join(out, "data_seen.json")) as f:
        seen = json.load(f)
    assert seen["labelled"]["utterances"] == 48
    assert seen["unlabelled"]["utterances"] + seen["unlabelled_empty_consensus"] == 12
    assert seen["unlabelled_alpha"] == (1.0 if name == "kd" else 0.0)
    resolved = open(os.path.join(out, "hyperparams.yaml")).read()
    assert "# data seen per epoch: 48 labelled utterances (" in resolved
    with open(os.path.join(out, "train_with_unlabelled.json")) as f:
        mixed = json.load(f)
    store = TeacherStore(unlabelled_store[0])
    labels = store.label_encoder_labels
    for utt_id, entry in mixed.items():
        if entry["kd_split"] == UNLABELLED:
            reference = store.pseudo_reference(utt_id).tolist()
            assert entry["phn"].split() == [labels[i] for i in reference]
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "test PER" in log
    if name == "kd":
        assert "train kd_seq" in log
    else:  # alpha 0 on both kinds: no KD term at all
        assert "kd_seq" not in log


def test_student_without_an_unlabelled_part_is_told_how_to_write_it(
    mini_corpus, teacher_store, tmp_path
):
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, teacher_store, tmp_path / "kd", "--pretrain", "False",
               "--unlabelled", "timit_sa", *SMALL_STUDENT)  # fmt: skip
    message = str(err.value)
    assert teacher_store in message and "has no unlabelled part" in message
    assert "save_teachers.py --unlabelled timit_sa" in message


def _tones_pool(folder):
    """A pool of three tones (no speech, nothing of the corpus): another pool
    than the store's timit_sa."""
    (folder / "spk1").mkdir(parents=True)
    for k, hz in enumerate((220, 330, 440)):
        t = np.arange(16000 + 4000 * k) / 16000
        tone = (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        soundfile.write(folder / "spk1" / f"tone{k}.wav", tone, 16000)
    return str(folder)


def test_a_pool_the_store_does_not_hold_is_named_not_called_damage(
    mini_corpus, unlabelled_store, tmp_path
):
    """Issue 33: a student given another pool than the store's unlabelled
    part was told the store was damaged and to rerun save_teachers.py with
    --overwrite True, which would have destroyed the other pool's part."""
    store = unlabelled_store[0]
    (part,) = unlabelled_part_files(store)
    pool = _tones_pool(tmp_path / "tones")
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, store, tmp_path / "kd", "--pretrain", "False",
               "--unlabelled", pool, *SMALL_STUDENT)  # fmt: skip
    message = str(err.value)
    assert f"The unlabelled part {part} of the teacher store {store} was " in message
    assert "written for another pool: it holds 12 utterances (" in message
    assert "h) from --unlabelled timit_sa; this run's pool is 3 utterances" in message
    assert f"from --unlabelled {pool}, 0 of them in the part" in message
    assert "The store is not damaged" in message and "is damaged" not in message
    assert f"--overwrite True on {store}: it would replace" in message
    assert not os.path.exists(tmp_path / "kd" / "save" / "model_config.json")


def test_a_merged_store_file_with_unlabelled_names_its_store_folder(
    mini_corpus, unlabelled_store, tmp_path
):
    """Issue 33: --tea_infer_dir naming the merged .h5 with --unlabelled was
    told to write an unlabelled part that exists (in the store folder)."""
    store = unlabelled_store[0]
    (part,) = unlabelled_part_files(store)
    merged = str(tmp_path / "merged.h5")
    merge_store(store, merged, progress=False)
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, merged, tmp_path / "kd", "--pretrain", "False",
               "--unlabelled", "timit_sa", *SMALL_STUDENT)  # fmt: skip
    message = str(err.value)
    assert f"--tea_infer_dir {merged} is one store file (a merged store)" in message
    assert f"made from the store folder {store}, whose unlabelled part {part} " in (
        message
    )
    assert "holds this run's pool (12 utterances (" in message
    assert message.endswith(f"give --tea_infer_dir {store}.")
    # Another pool: said so, with the way that keeps the store's part.
    tones = _tones_pool(tmp_path / "tones")
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, merged, tmp_path / "kd2", "--pretrain", "False",
               "--unlabelled", tones, *SMALL_STUDENT)  # fmt: skip
    assert f"whose unlabelled part {part} was written for another pool" in str(
        err.value
    )


def test_unlabelled_alpha_out_of_range_is_refused(mini_corpus, teacher_store, tmp_path):
    proc = run_script(
        ["train_kd.py", KD_YAML, "--data_folder", mini_corpus, "--tea_infer_dir",
         teacher_store, "--output_folder", str(tmp_path / "x"),
         "--unlabelled_alpha", "1.5", "--device", "cpu"],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unlabelled_alpha must be in [0, 1], got 1.5" in proc.stderr


def _brain(alpha, unlabelled_alpha):
    """A KDBrain with just what ``combine_losses`` reads."""
    brain = KDBrain.__new__(KDBrain)
    hparams = SimpleNamespace(
        alpha=alpha, unlabelled_alpha=unlabelled_alpha, strategy="weighted",
        weight_scope="batch", weight_temperature=1.0, temperature=1.0,
        soften_student=False, distill_ctc=True, ctc_weight=0.3, blank_index=0,
        ctc_cost=functools.partial(sb.nnet.losses.ctc_loss, blank_index=0),
        seq_cost=sb.nnet.losses.nll_loss,
    )  # fmt: skip
    brain.__dict__.update(hparams=hparams, loss_parts={}, weight_sums={})
    return brain


def _batch(generator, b=4, t=12, length=5, v=6, n=2):
    p_ctc = torch.log_softmax(torch.randn(b, t, v, generator=generator), -1)
    p_seq = torch.log_softmax(torch.randn(b, length + 1, v, generator=generator), -1)
    phns = torch.randint(3, v, (b, length), generator=generator)
    rel = torch.tensor([1.0, 0.8, 0.6, 1.0])[:b]
    eos_rel = torch.round(rel * length + 1) / (length + 1)
    att = torch.softmax(torch.randn(b, n, length + 1, v, generator=generator), -1)
    teacher = {
        "ctc_hyps": torch.randint(3, v, (b, n, 4), generator=generator),
        "ctc_hyp_lens": torch.full((b, n), 4),
        "att_dist": att,
        "ctc_per": torch.rand(b, n, generator=generator) * 30,
        "att_per": torch.rand(b, n, generator=generator) * 30,
    }
    predictions = Predictions(
        p_ctc, p_seq, torch.tensor([1.0, 0.9, 0.7, 1.0])[:b], None
    )
    batch = SimpleNamespace(
        phn_encoded=(phns, rel),
        phn_encoded_eos=(torch.cat([phns, phns[:, :1]], 1), eos_rel),
        teacher=teacher,
    )  # fmt: skip
    return predictions, batch


def _rows(predictions, batch, index):
    index = torch.tensor(index)
    part = Predictions(*(x.index_select(0, index) for x in predictions[:3]), None)
    sub = SimpleNamespace(
        phn_encoded=tuple(x.index_select(0, index) for x in batch.phn_encoded),
        phn_encoded_eos=tuple(x.index_select(0, index) for x in batch.phn_encoded_eos),
        teacher={k: v.index_select(0, index) for k, v in batch.teacher.items()},
        unlabelled=torch.zeros(len(index), dtype=torch.bool),
    )
    return part, sub


def test_mixed_batch_objective_is_each_groups_objective_by_its_share():
    predictions, batch = _batch(torch.Generator().manual_seed(0))
    batch.unlabelled = torch.tensor([False, True, False, True])
    train = sb.Stage.TRAIN
    mixed = _brain(0.5, 1.0).combine_losses(None, None, predictions, batch, train)
    # The labelled rows (0, 2) at alpha 0.5, the unlabelled (1, 3) at 1.0,
    # each computed as a batch of its own.
    expected = 0.0
    for rows, alpha in (([0, 2], 0.5), ([1, 3], 1.0)):
        part, sub = _rows(predictions, batch, rows)
        sup = _brain(alpha, alpha).supervised_losses(part, sub)
        value = _brain(alpha, alpha).combine_losses(*sup, part, sub, train)
        expected = expected + 0.5 * value
    assert torch.allclose(mixed, expected)
    # Without unlabelled rows the objective is exactly the labelled one.
    batch.unlabelled = torch.zeros(4, dtype=torch.bool)
    sup = _brain(0.5, 1.0).supervised_losses(predictions, batch)
    plain = _brain(0.5, 1.0).combine_losses(*sup, predictions, batch, train)
    batch.unlabelled = None
    assert torch.equal(
        plain, _brain(0.5, 0.0).combine_losses(*sup, predictions, batch, train)
    )
    # Self-training rows (unlabelled_alpha 0) carry the supervised loss only.
    batch.unlabelled = torch.ones(4, dtype=torch.bool)
    only_sup = _brain(0.5, 0.0).combine_losses(None, None, predictions, batch, train)
    ctc, seq = _brain(0, 0).supervised_losses(predictions, batch)
    assert torch.allclose(only_sup, 0.3 * ctc + 0.7 * seq)


def test_unlabelled_targets_do_not_depend_on_batching(
    mini_corpus, teacher_list, teacher_store, unlabelled_store, tmp_path
):
    """Utterance-keyed and batch-independent, as the labelled splits: batch 1
    in ascending order gives the consensus and targets of batch 5 descending."""
    store = str(tmp_path / "store")
    shutil.copytree(teacher_store, store)
    save_teachers.main(
        [SAVE_YAML, "--data_folder", mini_corpus, "--tea_models_dir", teacher_list,
         "--output_folder", str(tmp_path / "out"), "--store_folder", store,
         "--device", "cpu", "--noprogressbar", "--batch_size", "1",
         "--unlabelled", "timit_sa"]
    )  # fmt: skip
    one, five = TeacherStore(store), TeacherStore(unlabelled_store[0])
    assert sorted(one.utterance_ids(UNLABELLED)) == sorted(
        five.utterance_ids(UNLABELLED)
    )
    for utt_id in one.utterance_ids(UNLABELLED):
        a, b = one.get(UNLABELLED, utt_id), five.get(UNLABELLED, utt_id)
        assert (
            one.pseudo_reference(utt_id).tolist()
            == five.pseudo_reference(utt_id).tolist()
        )
        assert [h.tolist() for h in a["ctc_hyps"]] == [
            h.tolist() for h in b["ctc_hyps"]
        ]
        assert torch.allclose(a["att_dist"], b["att_dist"], atol=1e-3, rtol=0)
        assert torch.equal(a["att_per"], b["att_per"])
