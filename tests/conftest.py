"""Shared pytest setup: import paths, and session fixtures that cost time to make.

``mini_corpus``: a tiny mini-TIMIT corpus (eSpeak NG speech in TIMIT's layout);
``mini_mixed_corpus``: the same speakers, half of them spoken by Flite.
``tiny_teachers``: two teachers trained one epoch at test size on it (different
architectures: tea0 and tea3), as a user would run them, in subprocesses.
"""

import os
import subprocess
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(_HERE)
for _path in (_HERE, REPO):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# One set of overrides shrinks any teacher config to test size (docs/stages.md).
TINY_MODEL = [
    "--cnn_blocks", "1", "--cnn_channels", "[8]", "--rnn_layers", "1",
    "--rnn_neurons", "16", "--dnn_blocks", "1", "--dnn_neurons", "16",
    "--emb_size", "8", "--dec_neurons", "16", "--attn_dim", "16",
]  # fmt: skip
TINY_RUN = ["--number_of_epochs", "1", "--batch_size", "8", "--test_beam_size", "2"]


# Tiny models on a 2-core machine train about twice as fast with one intra-op
# thread per process (measured: 17.6 s vs 36.1 s for 3 tiny epochs under load).
torch.set_num_threads(1)
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_script(args, cwd=REPO, check=True, timeout=600, env=None):
    """Runs ``python ARGS...`` from the repo root; returns the CompletedProcess."""
    env = SCRIPT_ENV if env is None else env
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory):
    """Path of a tiny mini-TIMIT corpus (made once per test session)."""
    from tools.mini_timit import make_mini_timit

    out = tmp_path_factory.mktemp("mini") / "TIMIT"
    make_mini_timit(str(out), seed=7, preset="tiny")
    return str(out)


@pytest.fixture(scope="session")
def mini_mixed_corpus(tmp_path_factory):
    """Path of the tiny mixed corpus (seed 7: the session corpus's speakers,
    half of every split spoken by Flite); skipped, with the reason, where
    Flite is not installed."""
    from tools.mini_timit import make_mini_timit
    from tools.mini_timit.flite import flite_missing

    missing = flite_missing()
    if missing:
        pytest.skip(f"Flite is not installed: {missing}")
    out = tmp_path_factory.mktemp("mixed") / "TIMIT"
    make_mini_timit(str(out), seed=7, preset="tiny_mixed")
    return str(out)


def train_tiny_teacher(config, data_folder, output_folder, extra=()):
    """Trains one teacher at test size; returns its best ``model.ckpt`` path."""
    proc = run_script(
        [
            "train_teacher.py", config, "--data_folder", data_folder,
            "--output_folder", output_folder, "--device", "cpu",
            "--noprogressbar", *TINY_MODEL, *TINY_RUN, *extra,
        ]
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return lines[-1]


@pytest.fixture(scope="session")
def tiny_teachers(mini_corpus, tmp_path_factory):
    """Two tiny teachers (tea0: GRU decoder; tea3: LSTM decoder, 5 RNN layers
    shrunk to 1) trained one epoch; returns a list of their model.ckpt paths."""
    root = tmp_path_factory.mktemp("teachers")
    return [
        train_tiny_teacher(
            f"hparams/teachers/{name}.yaml", mini_corpus, str(root / name)
        )
        for name in ("tea0", "tea3")
    ]


@pytest.fixture(scope="session")
def teacher_list(tiny_teachers, tmp_path_factory):
    """A teacher list file as users write it: comments, blank lines, paths."""
    path = tmp_path_factory.mktemp("list") / "teachers.txt"
    lines = ["# the two tiny teachers", tiny_teachers[0], "", tiny_teachers[1]]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def teacher_store(mini_corpus, teacher_list, tmp_path_factory):
    """Store of both tiny teachers, made with batch 5 in descending order
    (stage 3 tests then use another batch size and order on purpose)."""
    import save_teachers

    out = tmp_path_factory.mktemp("store_a")
    yaml = os.path.join(REPO, "hparams/save_teachers.yaml")
    save_teachers.main(
        [
            yaml, "--data_folder", mini_corpus,
            "--tea_models_dir", teacher_list, "--output_folder", str(out),
            "--device", "cpu", "--noprogressbar", "--batch_size", "5",
            "--sorting", "descending",
        ]
    )  # fmt: skip
    return os.path.join(str(out), "store")


def write_per_test(path, edits, ref_tokens, ids=None, ctc_per=None):
    """A ``per_test.txt`` as a test run writes it (``mtkd.brain.write_per_report``
    on SpeechBrain's ``ErrorRateStats``), for utterances with the given numbers
    of edits and reference phones: utterance k's hypothesis substitutes its
    first ``edits[k]`` phones (an edit count above the reference length adds
    insertions). ``ids`` default to ``SPK<k // 8>_SX<k>``; ``ctc_per`` (the
    greedy CTC PER of the first line) defaults to the PER."""
    from speechbrain.utils.metric_stats import ErrorRateStats

    from mtkd.brain import write_per_report

    stats = ErrorRateStats()
    ids = ids or [f"SPK{k // 8}_SX{k}" for k in range(len(edits))]
    for utt, n_edits, n_ref in zip(ids, edits, ref_tokens, strict=True):
        ref = ["aa"] * n_ref
        subs = min(n_edits, n_ref)
        hyp = ["iy"] * subs + ["aa"] * (n_ref - subs) + ["s"] * (n_edits - subs)
        stats.append([utt], [hyp], [ref])
    per = stats.summarize("error_rate")
    ctc_per = per if ctc_per is None else ctc_per
    write_per_report(str(path), {"PER": per, "CTC_PER": ctc_per}, stats)
    return str(path)
