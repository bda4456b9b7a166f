"""Stage 3: the student trains from the store with every strategy; checks; resume."""

import json
import os
import re
import shutil

import pytest
import torch
from conftest import REPO, TINY_MODEL, run_script

import train_kd
from mtkd import RecipeError
from mtkd.distill import load_pretrained_encoder, pretrained_model_path
from mtkd.model import CTCAttentionASR

YAML = os.path.join(REPO, "hparams/train_kd.yaml")
# The store was made with batch 5, descending order; the student differs.
STUDENT_RUN = [
    "--number_of_epochs", "1", "--batch_size", "3", "--sorting", "random",
    "--test_beam_size", "2", "--num_workers", "0", "--device", "cpu",
    "--noprogressbar",
]  # fmt: skip
# A student smaller than the (tiny) teachers.
SMALL_STUDENT = [
    "--cnn_blocks", "1", "--cnn_channels", "[4]", "--rnn_layers", "1",
    "--rnn_neurons", "12", "--dnn_blocks", "1", "--dnn_neurons", "12",
    "--emb_size", "8", "--dec_neurons", "12", "--attn_dim", "12",
]  # fmt: skip


def run_kd(corpus, store, out, *extra):
    """Runs train_kd.py in this process; returns the output folder."""
    train_kd.main(
        [YAML, "--data_folder", corpus, "--tea_infer_dir", store,
         "--output_folder", str(out), *STUDENT_RUN, *map(str, extra)]
    )  # fmt: skip
    return str(out)


def epochs_logged(out):
    log = open(os.path.join(out, "train_log.txt")).read()
    return [int(e) for e in re.findall(r"^epoch: (\d+)", log, re.M)], log


def weights_log(out):
    with open(os.path.join(out, "teacher_weights.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def kd_runs(mini_corpus, teacher_store, tiny_teachers, tmp_path_factory):
    """One student per strategy: average pretrained from teacher 0 (same
    sizes), top-k likewise but given teacher 0's checkpoint folder and with
    its CTC branch not distilled, best and
    weighted smaller and from scratch; weighted with the original's
    augmentation and a weight temperature, best with dynamic batching."""
    root = tmp_path_factory.mktemp("kd")
    return {
        "average": run_kd(
            mini_corpus, teacher_store, root / "average", "--strategy", "average",
            "--pretrain", "True", "--pretrain_st_dir", tiny_teachers[0], *TINY_MODEL,
        ),
        "best": run_kd(
            mini_corpus, teacher_store, root / "best", "--strategy", "best",
            "--pretrain", "False", "--dynamic_batching", "True",
            "--dynamic_batch_sampler", "{max_batch_length: 900, num_buckets: 4, "
            "shuffle: True, batch_ordering: random}", *SMALL_STUDENT,
        ),
        "top-k": run_kd(
            mini_corpus, teacher_store, root / "top-k", "--strategy", "top-k",
            "--pretrain", "True", "--pretrain_st_dir",
            os.path.dirname(tiny_teachers[0]), "--distill_ctc", "False",
            *TINY_MODEL,
        ),
        "weighted": run_kd(
            mini_corpus, teacher_store, root / "weighted", "--strategy", "weighted",
            "--pretrain", "False", "--augment", "True",
            "--weight_temperature", "10", "--weight_scope", "utterance",
            *SMALL_STUDENT,
        ),
    }  # fmt: skip


@pytest.mark.parametrize("strategy", ["average", "best", "weighted", "top-k"])
def test_each_strategy_trains_and_reports(kd_runs, strategy):
    out = kd_runs[strategy]
    epochs, log = epochs_logged(out)
    assert epochs == [1]
    # KD and supervised parts of the loss are logged separately.
    for part in ("train kd_ctc", "train kd_seq", "train ctc_loss", "train seq_loss"):
        assert part in log
    assert re.search(r"test PER: [0-9.e+]+", log)
    with open(os.path.join(out, "per_test.txt")) as f:
        assert f.readline().startswith("PER: ")
    summary = weights_log(out)[0]
    assert summary["epoch"] == 1
    distilled = ("seq",) if strategy == "top-k" else ("ctc", "seq")
    assert sorted(k for k in summary if k != "epoch") == sorted(distilled)
    if strategy == "top-k":  # --distill_ctc False: no CTC KD term
        assert re.search(r"train kd_ctc: 0\.0+(e\+00)?,", log)
    for branch in distilled:
        weights = summary[branch]["mean_weight_per_teacher"]
        assert len(weights) == 2 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    resolved = open(os.path.join(out, "hyperparams.yaml")).read()
    assert f"strategy: {strategy}" in resolved


def test_strategy_weights_behave_as_defined(kd_runs):
    average = weights_log(kd_runs["average"])[0]
    assert average["seq"]["mean_weight_per_teacher"] == [0.5, 0.5]
    assert average["ctc"]["entropy_nats"] == pytest.approx(0.693147, abs=1e-5)
    best = weights_log(kd_runs["best"])[0]
    # Best: the attention target is one teacher per utterance (one-hot rows).
    assert best["seq"]["mean_top_weight"] == pytest.approx(1.0)
    assert best["seq"]["entropy_nats"] == pytest.approx(0.0, abs=1e-6)
    weighted = weights_log(kd_runs["weighted"])[0]
    # tau = 10 softens the paper's near one-hot softmax: real mixing.
    assert weighted["seq"]["entropy_nats"] > 0.05
    # top-k: rows are 1 (one best teacher) or 1/2 (both tied): top weight in
    # [1/2, 1], and the entropy is ln 2 times the share of tied rows.
    top_k = weights_log(kd_runs["top-k"])[0]["seq"]
    tied = 2 * (1 - top_k["mean_top_weight"])
    assert 0.5 <= top_k["mean_top_weight"] <= 1.0
    assert top_k["entropy_nats"] == pytest.approx(tied * 0.693147, abs=1e-5)


def test_pretrained_student_starts_from_the_teacher_encoder(tiny_teachers):
    config = json.load(
        open(os.path.join(os.path.dirname(os.path.dirname(tiny_teachers[0])),
                          "model_config.json"))
    )["model"]  # fmt: skip
    student = CTCAttentionASR(**{**config, "dropout": 0.25})
    load_pretrained_encoder(student, tiny_teachers[0])
    teacher_state = torch.load(tiny_teachers[0], map_location="cpu")
    for key, value in student.enc.state_dict().items():
        assert torch.equal(value, teacher_state[f"enc.{key}"])
    smaller = CTCAttentionASR(**{**config, "rnn_neurons": 12})
    with pytest.raises(RecipeError, match="does not fit the student's encoder"):
        load_pretrained_encoder(smaller, tiny_teachers[0])
    with pytest.raises(RecipeError, match="--pretrain False"):
        load_pretrained_encoder(smaller, None)


def test_pretrain_st_dir_takes_a_file_or_a_folder(tiny_teachers, tmp_path):
    model_ckpt = tiny_teachers[0]  # .../save/CKPT+.../model.ckpt
    checkpoint_folder = os.path.dirname(model_ckpt)
    save_folder = os.path.dirname(checkpoint_folder)
    run_folder = os.path.dirname(save_folder)
    for given in (model_ckpt, checkpoint_folder, save_folder, run_folder):
        assert os.path.samefile(pretrained_model_path(given), model_ckpt), given
    with pytest.raises(RecipeError, match=r"neither a teacher model.ckpt nor a"):
        pretrained_model_path(str(tmp_path))
    with pytest.raises(RecipeError, match="--pretrain False"):
        pretrained_model_path(str(tmp_path / "missing"))


def test_resume_continues_without_redoing_epochs(mini_corpus, teacher_store, kd_runs):
    out = kd_runs["best"] + "_resumed"
    shutil.copytree(kd_runs["best"], out)
    run_kd(
        mini_corpus, teacher_store, out, "--strategy", "best", "--pretrain", "False",
        "--number_of_epochs", "2", *SMALL_STUDENT,
    )  # fmt: skip
    epochs, _ = epochs_logged(out)
    assert epochs == [1, 2]
    assert [line["epoch"] for line in weights_log(out)] == [1, 2]


def test_store_for_other_labels_is_refused(mini_corpus, teacher_store, tmp_path):
    with pytest.raises(RecipeError, match="another label set"):
        run_kd(mini_corpus, teacher_store, tmp_path, "--phn_set", "48",
               "--output_neurons", "51", "--pretrain", "False")  # fmt: skip


def test_store_for_other_temperature_is_refused(mini_corpus, teacher_store, tmp_path):
    with pytest.raises(RecipeError, match="--temperature 1"):
        run_kd(mini_corpus, teacher_store, tmp_path, "--temperature", "2",
               "--pretrain", "False")  # fmt: skip


def test_store_for_other_data_is_refused(mini_corpus, teacher_store, tmp_path):
    corpus = tmp_path / "TIMIT"
    shutil.copytree(mini_corpus, corpus)
    # One training speaker fewer: the train manifest no longer matches.
    train = corpus / "TRAIN"
    speaker = sorted(p for p in train.glob("DR*/*") if p.is_dir())[0]
    shutil.rmtree(speaker)
    with pytest.raises(RecipeError, match="does not match the train manifest"):
        run_kd(str(corpus), teacher_store, tmp_path / "out", "--pretrain", "False")


def test_missing_store_and_pretrain_path_are_clear(
    mini_corpus, teacher_store, tmp_path
):
    with pytest.raises(RecipeError, match="tea_infer_dir is not set"):
        train_kd.main([YAML, "--data_folder", mini_corpus, "--output_folder",
                       str(tmp_path), *STUDENT_RUN])  # fmt: skip
    with pytest.raises(RecipeError, match="pretrain_st_dir"):
        run_kd(mini_corpus, teacher_store, tmp_path / "p", "--pretrain", "True")


def test_alpha_0_continues_a_teacher_on_the_labels_alone(
    mini_corpus, teacher_store, tiny_teachers, tmp_path
):
    """The paper setting's control (docs/kd_study.md): train_kd.py with alpha 0
    trains the teacher's objective from the same initialisation."""
    out = run_kd(
        mini_corpus, teacher_store, tmp_path / "labels", "--strategy", "best",
        "--alpha", "0", "--pretrain", "True", "--pretrain_st_dir", tiny_teachers[0],
        *TINY_MODEL,
    )  # fmt: skip
    _, log = epochs_logged(out)
    (line,) = [row for row in log.splitlines() if row.startswith("epoch: 1")]
    assert "ctc_loss" in line and "kd_seq" not in line and "kd_ctc" not in line
    parts = dict(re.findall(r"(\w+): ([-0-9.e+]+)", line.split(" - ")[1]))
    weight = 0.1  # train_kd.yaml's ctc_weight
    expected = weight * float(parts["ctc_loss"]) + (1 - weight) * float(
        parts["seq_loss"]
    )
    assert float(parts["loss"]) == pytest.approx(expected, rel=0.02)
    assert not os.path.exists(os.path.join(out, "teacher_weights.jsonl"))


def test_help_lists_the_recipe_keys_and_sorted_speechbrain_options():
    """Issue 24: each stage's --help shows its YAML keys with their defaults,
    then SpeechBrain's run options in a fixed (sorted) order."""
    first = run_script(["train_kd.py", "--help"]).stdout
    second = run_script(["train_kd.py", "--help"]).stdout
    assert first == second  # SpeechBrain alone prints its options in any order
    assert first.startswith("usage: python train_kd.py HPARAMS.yaml")
    recipe, options = first.split("SpeechBrain's run options:")
    keys = dict(
        line.split(None, 1) for line in recipe.splitlines() if line.startswith("  --")
    )
    assert keys["--alpha"].strip() == "1.0" and keys["--strategy"].strip() == "best"
    assert keys["--data_folder"].strip() == "(required)"
    assert keys["--cnn_channels"].strip() == "[128, 256]"
    names = re.findall(r"^  (--\w+)", options, re.M)
    assert "--device" in names and "--precision" in names
    assert names == sorted(names, key=lambda n: n.lstrip("-").lower())
