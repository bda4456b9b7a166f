"""Distillation on audio without transcripts (issue 23), end to end on the tiny
corpus: its 12 SA1/SA2 utterances (``--unlabelled timit_sa``) are the
unlabelled audio. The store's unlabelled part, its consensus and PERs; the
student trained on labelled + unlabelled; the mixed objective; bad input."""

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import soundfile
import speechbrain as sb
import torch
from conftest import REPO, run_script
from test_save_teachers import YAML as SAVE_YAML
from test_teacher_store import copy_run
from test_train_kd import SMALL_STUDENT, run_kd

import save_teachers
from mtkd import RecipeError
from mtkd.brain import Predictions
from mtkd.consensus import consensus, edit_distances, error_rates_against
from mtkd.distill import (
    KDBrain,
    epochs_for_unfiltered_updates,
    keep_by_disagreement,
    mixed_train_manifest,
)
from mtkd.runs import best_checkpoint_model_path
from mtkd.store import StoreError, TeacherStore
from mtkd.store.format import UNLABELLED, unlabelled_part_files
from mtkd.store.merge import merge_store
from mtkd.teachers import TeacherListError

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
    # Ties (with two teachers, every utterance) go to the lower valid PER,
    # the labelled parts' greedy CTC PER on valid, recorded in the part.
    valid_per = store.corpus_per("valid")["ctc"]
    assert store.unlabelled_meta["tie_break"]["valid_ctc_per"] == valid_per
    assert store.unlabelled_meta["format_version"] == 3
    for row, utt_id in enumerate(utt_ids):
        got = store.get(UNLABELLED, utt_id)
        hyps = [h.tolist() for h in got["ctc_hyps"]]
        index, _ = consensus(hyps, priority=valid_per)
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


def test_leave_one_out_scores_and_disagreement_of_two_teachers(unlabelled_store):
    """With two teachers each one's leave-one-out reference is the other's
    hypothesis; the disagreement is their distance per consensus phone."""
    store = TeacherStore(unlabelled_store[0])
    assert store.has_leave_one_out
    loo_teacher = store.unlabelled_array("loo_teacher")
    assert loo_teacher.tolist() == [[1, 0]] * len(loo_teacher)
    spread = store.unlabelled_array("disagreement")
    for row, utt_id in enumerate(store.utterance_ids(UNLABELLED)):
        loo = store.get(UNLABELLED, utt_id, "leave_one_out")
        hyps = [h.tolist() for h in loo["ctc_hyps"]]
        other = error_rates_against([hyps[0]], hyps[1]).tolist()
        other += error_rates_against([hyps[1]], hyps[0]).tolist()
        assert np.allclose(loo["ctc_per"].numpy(), other, atol=1e-4)
        distance = edit_distances([(hyps[0], hyps[1])])[0]
        length = len(store.pseudo_reference(utt_id))
        expected = min(100.0 * distance / max(length, 1), 100.0)
        assert spread[row] == pytest.approx(expected, rel=1e-6)
    summary = store.summary()
    loo_summary = summary["splits"][UNLABELLED]["leave_one_out"]
    assert loo_summary["disagreement_mean"] == pytest.approx(float(spread.mean()))
    with pytest.raises(ValueError, match="scores must be one of"):
        store.get(UNLABELLED, store.utterance_ids(UNLABELLED)[0], "loo")


def _as_version_2(part):
    """Turns an unlabelled part into what format version 2 wrote."""
    with h5py.File(part, "a") as f:
        for name in ("loo_teacher", "loo_ctc_per", "loo_att_per", "disagreement"):
            del f[UNLABELLED][name]
        f.attrs["format_version"] = 2
        meta = json.loads(f["meta_json"][()])
        meta["format_version"] = 2
        del meta["tie_break"]
        del f["meta_json"]
        f.create_dataset("meta_json", data=json.dumps(meta))


def test_a_version_2_unlabelled_part_still_reads_and_is_rewritten_on_request(
    mini_corpus, teacher_list, unlabelled_store, tmp_path
):
    store_path = str(tmp_path / "store")
    shutil.copytree(unlabelled_store[0], store_path)
    (part,) = unlabelled_part_files(store_path)
    _as_version_2(part)
    old = TeacherStore(store_path)
    assert old.has_unlabelled and not old.has_leave_one_out
    utt_id = old.utterance_ids(UNLABELLED)[0]
    new = TeacherStore(unlabelled_store[0])
    assert torch.equal(
        old.get(UNLABELLED, utt_id)["ctc_per"], new.get(UNLABELLED, utt_id)["ctc_per"]
    )
    with pytest.raises(StoreError, match=r"format version 2.*--overwrite True"):
        old.get(UNLABELLED, utt_id, "leave_one_out")
    assert "leave_one_out" not in old.summary()["splits"][UNLABELLED]
    # The same save_teachers.py command stops, saying why; --overwrite
    # writes the part again at version 3.
    with pytest.raises(StoreError, match="format version 2, without leave-one-out"):
        save(mini_corpus, teacher_list, tmp_path / "out", store_path,
             "--unlabelled", "timit_sa")  # fmt: skip
    save(mini_corpus, teacher_list, tmp_path / "out", store_path,
         "--unlabelled", "timit_sa", "--overwrite", "True")  # fmt: skip
    assert TeacherStore(store_path).has_leave_one_out


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


def _counted(brain):
    """Makes ``brain``'s supervised costs count the rows they are given."""
    rows = {"ctc": 0, "seq": 0}
    hp = brain.hparams
    ctc_cost, seq_cost = hp.ctc_cost, hp.seq_cost

    def count(name, cost):
        def counted(predictions, targets, *lengths):
            rows[name] += predictions.shape[0]
            return cost(predictions, targets, *lengths)

        return counted

    hp.ctc_cost, hp.seq_cost = count("ctc", ctc_cost), count("seq", seq_cost)
    return rows


def test_mixed_batch_objective_pools_each_kind_by_its_own_normaliser():
    """Each kind of row is computed as a batch of its own; the CTC branches
    are pooled by utterances, the attention branches by tokens (decoder
    positions with eos): labelled rows 0 and 2 have 6 + 4 = 10 of them,
    unlabelled rows 1 and 3 have 5 + 6 = 11 (not their 1/2 share of rows)."""
    predictions, batch = _batch(torch.Generator().manual_seed(0))
    batch.unlabelled = torch.tensor([False, True, False, True])
    brain = _brain(0.5, 1.0)
    rows = _counted(brain)
    mixed = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    branches, sup = {}, {}
    for kind, index, alpha in (("l", [0, 2], 0.5), ("u", [1, 3], 1.0)):
        part, sub = _rows(predictions, batch, index)
        alone = _brain(alpha, alpha)
        sup[kind] = alone.supervised_losses(part, sub)
        branches[kind] = alone._objective(
            *sup[kind], part, sub.teacher, sub.phn_encoded_eos[1], alpha
        )
    ctc = (2 * branches["l"][0] + 2 * branches["u"][0]) / 4
    seq = (10 * branches["l"][1] + 11 * branches["u"][1]) / 21
    assert torch.allclose(mixed, 0.3 * ctc + 0.7 * seq, rtol=1e-6, atol=0)
    # The old weighting (each kind's objective by its share of the rows)
    # gives another number: the test tells the two apart.
    share = sum(0.5 * (0.3 * c + 0.7 * q) for c, q in branches.values())
    assert not torch.allclose(mixed, share, rtol=1e-4, atol=0)
    # Every row's supervised losses are computed once (not once more for the
    # log), and the logged whole-batch values are what one call over the
    # whole batch gives.
    assert rows == {"ctc": 4, "seq": 4}
    whole_ctc, whole_seq = _brain(0, 0).supervised_losses(predictions, batch)
    logged = brain.loss_part_averages()
    assert logged["ctc_loss"] == pytest.approx(float(whole_ctc), rel=1e-6)
    assert logged["seq_loss"] == pytest.approx(float(whole_seq), rel=1e-6)
    assert brain.combine_losses(None, None, predictions, batch, sb.Stage.TRAIN) == (
        pytest.approx(float(mixed), rel=1e-7)
    )


def test_a_batch_of_one_kind_keeps_its_objective_exactly():
    predictions, batch = _batch(torch.Generator().manual_seed(0))
    train = sb.Stage.TRAIN
    # Without unlabelled rows the objective is exactly the labelled one.
    batch.unlabelled = torch.zeros(4, dtype=torch.bool)
    sup = _brain(0.5, 1.0).supervised_losses(predictions, batch)
    plain = _brain(0.5, 1.0).combine_losses(*sup, predictions, batch, train)
    batch.unlabelled = None
    assert torch.equal(
        plain, _brain(0.5, 0.0).combine_losses(*sup, predictions, batch, train)
    )
    batch.unlabelled = torch.zeros(4, dtype=torch.bool)
    brain = _brain(0.5, 1.0)
    assert torch.equal(plain, brain.compute_objectives(predictions, batch, train))
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


# ------------------------------------------------------------ filtering


def test_keep_by_disagreement_by_hand():
    spread = {"a": 0.0, "b": 12.5, "c": 40.0}
    assert keep_by_disagreement(spread, None, list(spread)) == {"a", "b", "c"}
    assert keep_by_disagreement(spread, 12.5, list(spread)) == {"a", "b"}
    with pytest.raises(RecipeError) as err:
        keep_by_disagreement(spread, 5, ["b", "c"])
    assert str(err.value).startswith(
        "unlabelled_max_disagreement 5 keeps none of the 2 unlabelled utterances "
        "(the teachers' lowest disagreement there is 12.50 %)"
    )


def test_mixed_manifest_leaves_out_what_the_teachers_disagree_on(tmp_path):
    train = {"T1": {"wav": "t1.wav", "duration": 3.6, "phn": "sil aa sil"}}
    pool = {
        "P1": {"wav": "p1.wav", "duration": 1.8},
        "P2": {"wav": "p2.wav", "duration": 7.2},
        "P3": {"wav": "p3.wav", "duration": 3.6},
    }
    for name, data in (("train", train), ("pool", pool)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    labels = ["<blank>", "sil", "aa"]
    refs = {"P1": [1, 2], "P2": [2], "P3": []}
    out = str(tmp_path / "mixed.json")
    seen = mixed_train_manifest(
        str(tmp_path / "train.json"), str(tmp_path / "pool.json"), refs, labels,
        out, {"P1": 10.0, "P2": 30.0, "P3": 5.0}, 20.0,
    )  # fmt: skip
    mixed = json.load(open(out))
    # P2 disagrees by 30 % > 20 %: left out; P3's consensus is empty.
    assert sorted(mixed) == ["P1", "T1"]
    assert mixed["P1"]["phn"] == "sil aa" and mixed["P1"]["kd_split"] == UNLABELLED
    assert seen["unlabelled"] == {"utterances": 1, "hours": 0.0005}
    assert seen["unlabelled_dropped_disagreement"] == {"utterances": 1, "hours": 0.002}
    assert seen["unlabelled_max_disagreement"] == 20.0
    assert seen["unlabelled_empty_consensus"] == 1


def _with_disagreement(store_path, values):
    """Sets the unlabelled part's disagreement (the test knows its values)."""
    (part,) = unlabelled_part_files(store_path)
    with h5py.File(part, "a") as f:
        f[UNLABELLED]["disagreement"][...] = values
    os.remove(part + ".sha256")  # the bytes changed on purpose


def test_a_threshold_that_keeps_nothing_stops_before_training(
    mini_corpus, unlabelled_store, tmp_path
):
    store = str(tmp_path / "store")
    shutil.copytree(unlabelled_store[0], store)
    _with_disagreement(store, np.arange(12, dtype=np.float32) * 5 + 7.5)
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, store, tmp_path / "kd", "--pretrain", "False",
               "--unlabelled", "timit_sa", "--unlabelled_max_disagreement", "5",
               *SMALL_STUDENT)  # fmt: skip
    assert str(err.value).startswith(
        "unlabelled_max_disagreement 5 keeps none of the 12 unlabelled "
        "utterances (the teachers' lowest disagreement there is 7.50 %)"
    )
    assert not os.path.exists(tmp_path / "kd" / "train_log.txt")


def test_leave_one_out_scores_need_three_teachers(
    mini_corpus, unlabelled_store, teacher_list, tmp_path
):
    with pytest.raises(RecipeError) as err:
        run_kd(mini_corpus, unlabelled_store[0], tmp_path / "kd", "--pretrain",
               "False", "--unlabelled", "timit_sa", "--unlabelled_scores",
               "leave_one_out", *SMALL_STUDENT)  # fmt: skip
    message = str(err.value)
    assert message.startswith(
        "unlabelled_scores leave_one_out needs a consensus of at least 3 "
        f"teachers, but the teacher store {unlabelled_store[0]} has 2"
    )
    assert os.path.abspath(teacher_list) in message


def test_epochs_for_unfiltered_updates_by_hand():
    # 30 epochs of (384 + 384) / 8 = 96 batches: 2,880 updates; with 161 of
    # the pool kept an epoch is ceil(545 / 8) = 69 batches: 2,880 / 69 = 41.7.
    assert epochs_for_unfiltered_updates(30, 8, 384, 384, 161) == 42
    assert epochs_for_unfiltered_updates(30, 8, 384, 384, 384) == 30
    # 10 x ceil(20 / 4) = 50 updates; ceil(13 / 4) = 4 batches: 12.5 -> 12.
    assert epochs_for_unfiltered_updates(10, 4, 10, 10, 3) == 12
    # Never fewer epochs than asked.
    assert epochs_for_unfiltered_updates(1, 8, 10, 1, 0) == 1


def test_a_filtered_run_matches_the_updates_of_the_unfiltered_one(tmp_path):
    """train_kd.py: with unlabelled_match_updates the epoch counter's limit
    becomes the epochs of as many updates as without the filter, counting
    the pool as the manifest does (an empty consensus is left out either
    way); without the option or the filter nothing changes."""
    import train_kd

    train = tmp_path / "train.json"
    train.write_text(json.dumps({f"L{i}": {} for i in range(12)}))
    refs = {"a": [1, 2], "b": [3], "c": [], "d": [4], "e": [5, 6]}
    spread = {"a": 0.0, "b": 4.0, "c": 0.0, "d": 30.0, "e": 50.0}
    counter = SimpleNamespace(limit=10)
    hparams = {
        "unlabelled_match_updates": True, "unlabelled_max_disagreement": 5.0,
        "train_annotation": str(train), "number_of_epochs": 10, "batch_size": 4,
        "epoch_counter": counter,
    }  # fmt: skip
    # Unfiltered: 12 + 4 usable = 4 batches, 40 updates; kept a and b:
    # 14 -> 4 batches too, so 10 epochs.
    assert train_kd.match_unfiltered_updates(hparams, refs, spread) == {
        "asked": 10, "trained": 10}  # fmt: skip
    hparams["batch_size"] = 2  # 8 batches, 80 updates; a, b: 7 -> 11.4 -> 11
    assert train_kd.match_unfiltered_updates(hparams, refs, spread) == {
        "asked": 10, "trained": 11}  # fmt: skip
    assert counter.limit == 11
    counter.limit = 10
    for off in ({"unlabelled_match_updates": False},
                {"unlabelled_max_disagreement": None}):  # fmt: skip
        assert (
            train_kd.match_unfiltered_updates({**hparams, **off}, refs, spread) is None
        )
        assert counter.limit == 10
    with pytest.raises(train_kd.HparamsError, match="dynamic_batching False"):
        train_kd.check_kd_keys(
            {"tea_infer_dir": "s", "strategy": "weighted", "weight_scope": "batch",
             "unlabelled_match_updates": True, "dynamic_batching": True}
        )  # fmt: skip


def test_unlabelled_options_out_of_range_are_refused(
    mini_corpus, teacher_store, tmp_path
):
    for key, value, expected in (
        ("unlabelled_scores", "loo", "unlabelled_scores must be one of"),
        ("unlabelled_max_disagreement", "-1", "must be null or a PER in % (>= 0)"),
    ):
        proc = run_script(
            ["train_kd.py", KD_YAML, "--data_folder", mini_corpus,
             "--tea_infer_dir", teacher_store, "--output_folder",
             str(tmp_path / key), f"--{key}", value, "--device", "cpu"],
            check=False,
        )  # fmt: skip
        assert proc.returncode == 2 and expected in proc.stderr


# ------------------------------------------------------------ generations


@pytest.fixture(scope="module")
def generation(mini_corpus, teacher_list, teacher_store, mixed_runs, tmp_path_factory):
    """Generation 2: the distilled student of ``mixed_runs`` (narrower than
    the teachers) joins their list and relabels the unlabelled audio with
    them (the teachers' labelled part is reused); the next student trains on
    it with leave-one-out scores, a disagreement threshold (the median) and
    the original's augmentation (Noisy Student)."""
    root = tmp_path_factory.mktemp("generation")
    student = best_checkpoint_model_path(os.path.join(mixed_runs["kd"], "save"))
    listing = root / "gen2_teachers.txt"
    listing.write_text(open(teacher_list).read() + f"# generation 1\n{student}\n")
    store = str(root / "store")
    shutil.copytree(teacher_store, store)
    save(mini_corpus, str(listing), root / "out", store, "--unlabelled", "timit_sa")
    spread = TeacherStore(store).unlabelled_array("disagreement")
    threshold = float(np.median(spread))
    run = run_kd(
        mini_corpus, store, root / "gen2", "--pretrain", "False", "--unlabelled",
        "timit_sa", "--strategy", "weighted", "--alpha", "0.5",
        "--unlabelled_scores", "leave_one_out", "--unlabelled_max_disagreement",
        threshold, "--unlabelled_match_updates", "True", "--augment", "True",
        *SMALL_STUDENT,
    )  # fmt: skip
    return {"store": store, "list": str(listing), "student": student,
            "run": run, "threshold": threshold, "spread": spread}  # fmt: skip


def test_a_student_teaches_the_next_generation(generation):
    store = TeacherStore(generation["store"])
    assert store.teacher_count == 3 and store.has_leave_one_out
    assert store.teachers[2]["path"] == generation["student"]
    # The student is narrower than the teachers and loads as one.
    widths = [t["config"]["model"]["rnn_neurons"] for t in store.teachers]
    assert widths == [16, 16, 12]
    assert len(store.unlabelled_meta["tie_break"]["valid_ctc_per"]) == 3
    assert store.unlabelled_array("loo_ctc_per").shape == (12, 3)
    run = generation["run"]
    with open(os.path.join(run, "data_seen.json")) as f:
        seen = json.load(f)
    dropped = int((generation["spread"] > generation["threshold"]).sum())
    assert seen["unlabelled_dropped_disagreement"]["utterances"] == dropped
    kept = seen["unlabelled"]["utterances"] + seen["unlabelled_empty_consensus"]
    assert kept == 12 - dropped
    # As many updates as without the filter (1 epoch, batch 3, the pool's
    # utterances with a consensus): the epochs it took are in its log.
    usable = sum(
        len(store.pseudo_reference(u)) > 0 for u in store.utterance_ids(UNLABELLED)
    )
    epochs = epochs_for_unfiltered_updates(
        1, 3, seen["labelled"]["utterances"], usable, seen["unlabelled"]["utterances"]
    )
    assert seen["epochs"] == {"asked": 1, "trained": epochs}
    logged = re.findall(
        r"^epoch: (\d+)", open(os.path.join(run, "train_log.txt")).read(), re.M
    )
    assert logged == [str(e) for e in range(1, epochs + 1)]
    resolved = open(os.path.join(run, "hyperparams.yaml")).read()
    assert "augment: true" in resolved.lower()
    assert "unlabelled_scores: leave_one_out" in resolved
    assert "left out: teachers' disagreement above" in resolved
    log = open(os.path.join(run, "train_log.txt")).read()
    assert "train kd_seq" in log and "test PER" in log


def test_a_generation_with_a_missing_or_foreign_student_is_refused(
    mini_corpus, generation, teacher_store, tmp_path
):
    teachers = open(generation["list"]).read().rsplit(generation["student"], 1)[0]
    missing = str(tmp_path / "gen1" / "save" / "CKPT+x" / "model.ckpt")
    foreign = copy_run(generation["student"], tmp_path / "foreign")
    encoder = os.path.join(
        os.path.dirname(os.path.dirname(foreign)), "label_encoder.txt"
    )
    # Swap the ids of two phones: same labels, another order.
    text = open(encoder).read()
    text = text.replace("'aa' => 3", "@").replace("'ae' => 4", "'aa' => 4")
    open(encoder, "w").write(text.replace("@", "'ae' => 3"))
    for student, expected in ((missing, "model checkpoint not found"),
                              (foreign, "label encoder does not match")):  # fmt: skip
        listing = tmp_path / "teachers.txt"
        listing.write_text(teachers + student + "\n")
        with pytest.raises(TeacherListError) as err:
            save(mini_corpus, str(listing), tmp_path / "out", str(tmp_path / "s"),
                 "--unlabelled", "timit_sa")  # fmt: skip
        message = str(err.value)
        assert f"{listing} line " in message and student in message
        assert expected in message


def test_a_student_alone_relabels_but_gives_no_consensus_to_filter_by(
    mini_corpus, generation, tmp_path
):
    """Noisy Student's own setting: the student is the only teacher. Its
    hypothesis is the pseudo-reference; asking for the disagreement or
    leave-one-out scores is an error naming the option and the list."""
    listing = tmp_path / "alone.txt"
    listing.write_text(generation["student"] + "\n")
    store = str(tmp_path / "store")
    save(mini_corpus, str(listing), tmp_path / "out", store, "--unlabelled", "timit_sa")
    alone = TeacherStore(store)
    assert alone.teacher_count == 1
    for utt_id in alone.utterance_ids(UNLABELLED):
        assert float(alone.get(UNLABELLED, utt_id)["ctc_per"][0]) == 0.0
    assert np.isnan(alone.unlabelled_array("disagreement")).all()
    assert "leave_one_out" not in alone.summary()["splits"][UNLABELLED]
    for key, value in (("unlabelled_max_disagreement", "50"),
                       ("unlabelled_scores", "leave_one_out")):  # fmt: skip
        with pytest.raises(RecipeError) as err:
            run_kd(mini_corpus, store, tmp_path / key, "--pretrain", "False",
                   "--unlabelled", "timit_sa", f"--{key}", value,
                   *SMALL_STUDENT)  # fmt: skip
        message = str(err.value)
        assert message.startswith(f"{key} ") and "has 1 (teacher list" in message
        assert str(listing) in message


def test_consensus_quality_shows_what_each_threshold_keeps(unlabelled_store, tmp_path):
    """tools/consensus_quality.py on valid and on the SA utterances (their
    true phones lie beside the audio): a threshold of 0 keeps the utterances
    the teachers agree on, one above every disagreement keeps them all."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import consensus_quality

    from timit_prepare import _fold_table, _read_phn

    store_path, root, _ = unlabelled_store
    with open(root / "out" / "unlabelled.json") as f:
        manifest = json.load(f)
    oracle = {
        utt_id: {**entry, "phn": " ".join(_read_phn(
            os.path.splitext(entry["wav"])[0] + ".PHN", _fold_table(39)))}
        for utt_id, entry in manifest.items()
    }  # fmt: skip
    (tmp_path / "oracle.json").write_text(json.dumps(oracle))
    out = str(tmp_path / "quality.json")
    consensus_quality.main(
        ["--store", store_path, "--valid", str(root / "out" / "valid.json"),
         "--oracle", str(tmp_path / "oracle.json"), "--thresholds", "0", "1000",
         "--out", out]
    )  # fmt: skip
    result = json.load(open(out))
    store = TeacherStore(store_path)
    agree = {
        UNLABELLED: int((store.unlabelled_array("disagreement") == 0).sum()),
        "valid": sum(
            len({tuple(h.tolist()) for h in store.get("valid", u)["ctc_hyps"]}) == 1
            for u in store.utterance_ids("valid")
        ),
    }
    for split in ("valid", UNLABELLED):
        none, every = result[split]["thresholds"]
        assert none["utterances"] == agree[split]
        assert every["utterances"] == result[split]["utterances"]
        assert every["audio_share"] == pytest.approx(1.0)
        assert every["consensus_per"] == pytest.approx(result[split]["consensus"])
        # The per-utterance rows give the figures back.
        rows = result[split]["per_utterance"]
        assert list(rows) == store.utterance_ids(split)
        edits = sum(r["consensus_edits"] for r in rows.values())
        phones = sum(r["phones"] for r in rows.values())
        assert 100 * edits / phones == pytest.approx(result[split]["consensus"])
        assert sum(r["disagreement"] == 0 for r in rows.values()) == agree[split]
    assert result[UNLABELLED]["utterances"] == 12
