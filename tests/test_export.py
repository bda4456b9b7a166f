"""Export for SpeechBrain's inference API, transcription, and model cost.

A tiny teacher of the session fixtures is exported with ``export_model.py``,
loaded with ``EncoderDecoderASR.from_hparams`` (no network) and run over the
mini corpus: it must reproduce the training script's test PER. Then
``transcribe.py`` on folders, odd files and ``--json``, and ``model_cost``.
"""

import json
import os
import re
import shutil

import huggingface_hub
import numpy
import pytest
import soundfile
import speechbrain as sb
import speechbrain.utils.fetching
import torch
import torchaudio.functional
from conftest import SCRIPT_ENV, run_script
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.inference.ASR import EncoderDecoderASR
from speechbrain.utils.metric_stats import ErrorRateStats

import export_model as export_model_script
from mtkd.hparams import run_stage
from mtkd.model import CTCAttentionASR
from mtkd.runs import best_checkpoint
from mtkd_tools.export import (
    EXPORT_FILES,
    ExportError,
    NotAnExperimentError,
    UnfinishedRunError,
    export_model,
    model_cost,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def experiment(tiny_teachers):
    """tea0's experiment folder (model.ckpt -> CKPT+* -> save -> folder)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(tiny_teachers[0])))


@pytest.fixture(scope="module")
def exported(experiment, tmp_path_factory):
    """tea0 exported by the command line tool."""
    out = tmp_path_factory.mktemp("export") / "tea0"
    proc = run_script(["export_model.py", "--from", experiment, "--to", str(out)])
    assert "Exported" in proc.stdout
    return str(out)


@pytest.fixture(scope="module")
def split_items(experiment, mini_corpus):
    """The run's test set as its test loader reads it (sorted by duration)."""
    data = sb.dataio.dataset.DynamicItemDataset.from_json(
        json_path=os.path.join(experiment, "test.json"),
        replacements={"data_root": mini_corpus},
    ).filtered_sorted(sort_key="duration")

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio(wav):
        return sb.dataio.dataio.read_audio(wav)

    data.add_dynamic_item(audio)
    data.set_output_keys(["id", "sig", "wav", "phn"])
    return data


def run_setting(experiment, key, sub="batch_size"):
    """A value of the run's resolved hyperparams.yaml (``key: {sub: value}``)."""
    text = open(os.path.join(experiment, "hyperparams.yaml")).read()
    return int(re.search(rf"^{key}:\n\s+{sub}: (\d+)", text, re.M).group(1))


@pytest.fixture(scope="module")
def offline_asr(exported, tmp_path_factory):
    """The export loaded by SpeechBrain with every network path made to fail,
    from another working directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")

        def no_network(*args, **kwargs):
            raise AssertionError("network access while loading an exported model")

        mp.setattr(huggingface_hub, "hf_hub_download", no_network)
        mp.setattr(speechbrain.utils.fetching, "download_file", no_network)
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))
        asr = EncoderDecoderASR.from_hparams(
            source=exported, savedir="pretrained", run_opts={"device": "cpu"}
        )
    return asr


@pytest.fixture(scope="module")
def decoded(offline_asr, split_items, experiment):
    """{utterance id: phones} of the test set, in the run's test batches."""
    loader = make_dataloader(
        split_items, batch_size=run_setting(experiment, "test_dataloader_opts")
    )
    hyps = {}
    for batch in loader:
        phones, _ = offline_asr.transcribe_batch(*batch.sig)
        hyps.update(zip(batch.id, phones, strict=True))
    return hyps


def test_exported_model_reproduces_the_test_per(
    offline_asr, split_items, decoded, experiment
):
    stats = ErrorRateStats()
    for item in split_items:
        stats.append([item["id"]], [decoded[item["id"]].split()], [item["phn"].split()])
    per = stats.summarize("error_rate")
    with open(os.path.join(experiment, "per_test.txt")) as f:
        reported = float(re.match(r"PER: ([0-9.]+)", f.readline()).group(1))
    assert abs(per - reported) < 0.01, (per, reported)
    # The search is the run's test search.
    assert offline_asr.hparams.beam_size == 2  # TINY_RUN's --test_beam_size
    labels = set(offline_asr.tokenizer.lab2ind)
    assert len(labels) == 42
    phones = offline_asr.transcribe_file(split_items[0]["wav"])
    assert isinstance(phones, str) and phones and set(phones.split()) <= labels


def test_folder_exported_before_the_tools_moved_still_loads(
    exported, offline_asr, split_items, tmp_path
):
    """Folders exported before the export code left ``mtkd/`` name
    ``mtkd.export.make_searcher`` and ``mtkd.export.PhoneTokenizer``: the alias
    module still builds them, and the model transcribes as a new export."""
    old = tmp_path / "old_export"
    shutil.copytree(exported, old)
    yaml_path = old / "hyperparams.yaml"
    text = yaml_path.read_text()
    assert text.count("mtkd_tools.export.") == 2
    yaml_path.write_text(text.replace("mtkd_tools.export.", "mtkd.export."))
    asr = EncoderDecoderASR.from_hparams(
        source=str(old), savedir=str(tmp_path / "pretrained"),
        run_opts={"device": "cpu"},
    )  # fmt: skip
    assert type(asr.tokenizer).__module__ == "mtkd_tools.export"
    wav = split_items[0]["wav"]
    assert asr.transcribe_file(wav) == offline_asr.transcribe_file(wav)


def test_export_twice_gives_the_same_bytes(experiment, exported, tmp_path):
    again = tmp_path / "again"
    export_model(experiment, again)
    ckpt = os.path.join(experiment, "save")
    best = [n for n in os.listdir(ckpt) if n.startswith("CKPT+")]
    # Over the earlier export, naming the checkpoint: replaced, same bytes.
    export_model(experiment, again, checkpoint=os.path.join(ckpt, best[0]))
    assert sorted(os.listdir(exported)) == sorted(EXPORT_FILES)
    assert sorted(os.listdir(again)) == sorted(EXPORT_FILES)
    for name in EXPORT_FILES:
        with open(os.path.join(exported, name), "rb") as a:
            with open(again / name, "rb") as b:
                assert a.read() == b.read(), name
    assert os.listdir(tmp_path) == ["again"]  # no temporary folder left
    with open(os.path.join(exported, "asr.ckpt"), "rb") as a:
        with open(os.path.join(ckpt, best[0], "model.ckpt"), "rb") as b:
            assert a.read() == b.read()
    # Another search: the setting changes, the weights do not.
    greedy = tmp_path / "greedy"
    export_model(experiment, greedy, beam_size=1, decode_ctc_weight=0.5)
    text = (greedy / "hyperparams.yaml").read_text()
    assert "\nbeam_size: 1\n" in text and "\ndecode_ctc_weight: 0.5\n" in text


def test_unfinished_and_foreign_folders_are_clear_errors(experiment, tmp_path, capsys):
    # A run killed before its first epoch ended: no checkpoint yet.
    unfinished = tmp_path / "unfinished"
    (unfinished / "save").mkdir(parents=True)
    shutil.copy(os.path.join(experiment, "hyperparams.yaml"), unfinished)
    for name in ("model_config.json", "label_encoder.txt"):
        shutil.copy(os.path.join(experiment, "save", name), unfinished / "save")
    with pytest.raises(UnfinishedRunError, match=f"{unfinished}.*no checkpoint"):
        export_model(unfinished, tmp_path / "out")
    # Killed even earlier: no model_config.json.
    os.remove(unfinished / "save" / "model_config.json")
    with pytest.raises(UnfinishedRunError, match="model_config.json is missing"):
        export_model(unfinished, tmp_path / "out")
    # Another recipe's run, and a folder of something else.
    foreign = tmp_path / "foreign"
    (foreign / "save" / "CKPT+x").mkdir(parents=True)
    (foreign / "hyperparams.yaml").write_text("model: !new:other.Model\n")
    (foreign / "save" / "CKPT+x" / "model.ckpt").write_bytes(b"")
    with pytest.raises(NotAnExperimentError, match=f"{foreign} is not an experim"):
        export_model(foreign, tmp_path / "out")
    with pytest.raises(NotAnExperimentError, match="neither hyperparams.yaml"):
        export_model(tmp_path, tmp_path / "out")
    with pytest.raises(NotAnExperimentError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "out")
    # A --to folder that holds something else is left alone.
    with pytest.raises(ExportError, match="is not an exported model"):
        export_model(experiment, foreign)
    assert (foreign / "hyperparams.yaml").read_text() == "model: !new:other.Model\n"
    assert not (tmp_path / "out").exists()

    # The command line: the message, exit status 2, no traceback.
    argv = ["--from", str(unfinished), "--to", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        run_stage(export_model_script.main, argv)
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"ERROR: {unfinished} is an unfinished run")
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


def test_transcribe_folders_odd_files_and_missing_ones(
    exported, offline_asr, split_items, tmp_path
):
    sphere = split_items[0]["wav"]  # NIST SPHERE, 16 kHz
    wav, rate = soundfile.read(sphere, dtype="float32")
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "copy.flac", wav, rate)
    soundfile.write(folder / "sub" / "stereo.wav", numpy.stack([wav, wav], 1), rate)
    slow = torchaudio.functional.resample(torch.from_numpy(wav), rate, 8000)
    soundfile.write(folder / "sub" / "8k.WAV", slow.numpy(), 8000)
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    (folder / "notes.txt").write_text("not audio, not searched")
    missing = tmp_path / "missing.wav"

    proc = run_script(
        ["transcribe.py", exported, sphere, str(folder), str(missing),
         "--batch_size", "1", "--device", "cpu"],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"ERROR: {missing}: no such file" in proc.stderr
    assert f"ERROR: {folder / 'broken.wav'}: cannot read audio" in proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    expected = [sphere] + [
        str(folder / name) for name in ("copy.flac", "sub/8k.WAV", "sub/stereo.wav")
    ]
    assert [path for path, _ in lines] == expected
    phones = dict(lines)
    # The same samples give the same phones, whatever the file format.
    assert phones[sphere] == phones[str(folder / "copy.flac")]
    assert phones[sphere] == phones[str(folder / "sub/stereo.wav")]
    assert all(phones.values())
    # SpeechBrain's own file reading resamples to the model's rate too.
    assert offline_asr.transcribe_file(str(folder / "sub/8k.WAV"))


def test_transcribe_json_gives_the_test_hypotheses(
    exported, split_items, decoded, experiment
):
    # In the manifest's order, with the default batch size (the run's).
    with open(os.path.join(experiment, "test.json")) as f:
        ids = list(json.load(f))
    wavs = {item["id"]: item["wav"] for item in split_items}
    proc = run_script(["transcribe.py", exported, *(wavs[i] for i in ids), "--json"])
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in records] == [wavs[i] for i in ids]
    assert [r["phones"] for r in records] == [decoded[i] for i in ids]
    assert all(r["duration"] > 0.5 for r in records)


def test_model_cost(experiment, split_items):
    config = json.load(open(os.path.join(experiment, "save", "model_config.json")))
    files = [split_items[i]["wav"] for i in range(3)]
    cost = model_cost(experiment, files, repeats=2)
    model = CTCAttentionASR(**config["model"])
    assert cost["parameters"] == sum(p.numel() for p in model.parameters())
    ckpt = best_checkpoint(os.path.join(experiment, "save")).path
    assert cost["checkpoint_bytes"] == sum(
        os.path.getsize(os.path.join(ckpt, n)) for n in ("model.ckpt", "normalize.ckpt")
    )
    assert 0 < cost["rtf"] < 100
    assert cost["audio_seconds"] == pytest.approx(
        sum(soundfile.info(f).duration for f in files)
    )
    assert torch.get_num_threads() == 1  # restored (the module runs on one)


def test_transcribe_threads_option(monkeypatch, capsys):
    """--threads (issue 24): $OMP_NUM_THREADS by default, else 1; 0 refused."""
    import transcribe

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert transcribe.parse_args(["m", "f.wav"]).threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert transcribe.parse_args(["m", "f.wav"]).threads == 3
    assert transcribe.parse_args(["m", "f.wav", "--threads", "2"]).threads == 2
    with pytest.raises(SystemExit):
        transcribe.parse_args(["m", "f.wav", "--threads", "0"])
    assert "--threads must be 1 or more" in capsys.readouterr().err


def test_export_takes_the_stages_folder_names_and_the_old_ones():
    """Issue 24: --experiment_folder/--output_folder, as the stages name their
    folders; --from/--to keep working."""
    import export_model

    new = export_model.parse_args(["--experiment_folder", "a", "--output_folder", "b"])
    old = export_model.parse_args(["--from", "a", "--to", "b"])
    assert (new.source, new.target) == (old.source, old.target) == ("a", "b")


def test_exported_folder_loads_from_another_working_directory(
    exported, split_items, tmp_path
):
    """Issue 24: the documented snippet, run from a folder outside the recipe
    with no PYTHONPATH (the recipe is installed editable by requirements.txt)."""
    wav = split_items[0]["wav"]
    snippet = (
        "from speechbrain.inference.ASR import EncoderDecoderASR\n"
        f"asr = EncoderDecoderASR.from_hparams(source={exported!r}, "
        f"savedir={str(tmp_path / 'cache')!r})\n"
        f"print(asr.transcribe_file({wav!r}))\n"
    )
    env = {k: v for k, v in SCRIPT_ENV.items() if k != "PYTHONPATH"}
    proc = run_script(["-c", snippet], cwd=str(tmp_path), env=env)
    phones = proc.stdout.strip().splitlines()[-1].split()
    assert phones and all(p.isalpha() or p.startswith("<") for p in phones)


def test_special_labels_are_never_transcribed():
    """Issue 24: <bos>, <eos>, <blank> emitted by a decoder are no phones."""
    from mtkd_tools.export import PhoneTokenizer

    tokenizer = PhoneTokenizer()
    tokenizer.insert_bos_eos(
        bos_label="<bos>", eos_label="<eos>", bos_index=0, eos_index=1
    )
    tokenizer.insert_blank(blank_label="<blank>", index=2)
    tokenizer.update_from_iterable([["aa", "ae", "z"]], sequence_input=True)
    assert tokenizer.decode_ids([3, 0, 4, 2, 1, 5]) == "aa ae z"
    assert tokenizer.decode_ids(torch.tensor([0, 0])) == ""


def _transcribe_refused(capsys, argv):
    """transcribe.py's main through run_stage: status 2, one ERROR, no
    traceback; returns the message."""
    import transcribe

    with pytest.raises(SystemExit) as stop:
        run_stage(transcribe.main, [*argv, "--device", "cpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "Traceback" not in err
    return err


def test_transcribe_on_a_training_run_gives_the_export_command(
    experiment, exported, split_items, tmp_path, capsys
):
    """Issue 33: a run folder (or its save/, a CKPT+ folder, a model.ckpt) was
    said to hold a "damaged or cut off" checkpoint; an export missing
    tokenizer.ckpt only failed each file with "cannot transcribe"."""
    wav = split_items[0]["wav"]
    checkpoint = best_checkpoint(os.path.join(experiment, "save")).path
    for given in (experiment, os.path.join(checkpoint, "model.ckpt")):
        err = _transcribe_refused(capsys, [given, wav])
        assert "(train_teacher.py or train_kd.py writes such folders), not an " in err
        assert "damaged" not in err
        assert (
            f"Export it first: python export_model.py --from {experiment} --to "
            f"{experiment}_exported, then python transcribe.py "
            f"{experiment}_exported FILE_OR_FOLDER..."
        ) in err
    # tools/first_model.py's layout: model/ (the run) beside exported/.
    first = tmp_path / "first_model"
    shutil.copytree(experiment, first / "model")
    export_model(first / "model", first / "exported", check=False)
    err = _transcribe_refused(capsys, [str(first / "model"), wav])
    assert f"{first / 'model'} is a training run" in err
    assert f"An export of this run is at {first / 'exported'}: python " in err

    copy = tmp_path / "copied"
    shutil.copytree(exported, copy)
    os.remove(copy / "tokenizer.ckpt")
    err = _transcribe_refused(capsys, [str(copy), wav])
    assert f"{copy} is an exported model without tokenizer.ckpt" in err
    assert f"python export_model.py --from {experiment} --to {copy}" in err


def test_an_export_killed_mid_way_is_cleaned_up_by_the_next(experiment, tmp_path):
    """Issue 33: a killed export left its MODEL_DIR.partial-PID folder behind
    for good."""
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()
    target = tmp_path / "tea0"
    killed = tmp_path / f"tea0.partial-{ended.pid}"
    killed.mkdir()
    (killed / "asr.ckpt").write_bytes(b"half a checkpoint")
    running = tmp_path / f"tea0.partial-{os.getppid()}"  # a live process's
    running.mkdir()
    export_model(experiment, target, check=False)
    assert not killed.exists() and running.is_dir()
    assert sorted(os.listdir(target)) == sorted(EXPORT_FILES)
    # Killed between moving the earlier export aside and renaming the new
    # one: the earlier export is put back, and exported over as usual.
    os.rename(target, tmp_path / f"tea0.old-{ended.pid}")
    export_model(experiment, target, check=False)
    assert sorted(os.listdir(target)) == sorted(EXPORT_FILES)
    assert sorted(os.listdir(tmp_path)) == ["tea0", running.name]
