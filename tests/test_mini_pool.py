"""The mini corpus's pool of unlabelled audio (``--pool_speakers``): new
speakers and sentences, the same bytes from the same arguments, the labelled
corpus untouched, and a source ``unlabelled_prepare.py`` accepts."""

import hashlib
import os
import shutil

import pytest
from conftest import run_script

from timit_prepare import corpus_fingerprint
from tools.mini_timit import MiniTimitError
from tools.mini_timit.pool import POOL_FOLDER, POOL_MARKER, make_mini_pool
from unlabelled_prepare import prepare_unlabelled


def tree_digest(folder):
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name == POOL_MARKER:  # its path and wall time differ
                continue
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def texts(folder):
    """{stem path: sentence} of every .TXT under ``folder``."""
    out = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.endswith(".TXT"):
                with open(os.path.join(dirpath, name)) as f:
                    out[os.path.join(dirpath, name)] = f.read().split(" ", 2)[2].strip()
    return out


@pytest.fixture(scope="module")
def pools(mini_corpus, tmp_path_factory):
    """The session corpus copied twice, each given the same 3-speaker pool."""
    made = []
    for name in ("a", "b"):
        corpus = str(tmp_path_factory.mktemp(f"pool_{name}") / "TIMIT")
        shutil.copytree(mini_corpus, corpus)
        before = corpus_fingerprint(corpus)
        summary = make_mini_pool(corpus, pool_speakers=3, per_speaker=2)
        made.append((corpus, summary, before))
    return made


def test_pool_is_new_speakers_reading_new_sentences(pools):
    corpus, summary, _ = pools[0]
    pool = os.path.join(corpus, POOL_FOLDER)
    assert summary["speakers"] == 3 and summary["utterances"] == 6
    speakers = {os.path.basename(d) for d, _, f in os.walk(pool) if f and "DR" in d}
    assert len(speakers) == 3
    corpus_speakers = {
        name for split in ("TRAIN", "TEST")
        for dr in os.listdir(os.path.join(corpus, split))
        for name in os.listdir(os.path.join(corpus, split, dr))
    }  # fmt: skip
    assert not speakers & corpus_speakers
    pool_texts = set(texts(pool).values())
    corpus_texts = {t for split in ("TRAIN", "TEST")
                    for t in texts(os.path.join(corpus, split)).values()}  # fmt: skip
    assert len(pool_texts) == 6 and not pool_texts & corpus_texts
    for path in texts(pool):
        stem = os.path.basename(path)[: -len(".TXT")]
        assert stem.startswith("SI") and int(stem[2:]) >= 9000
        for ext in (".WAV", ".PHN", ".WRD"):
            assert os.path.isfile(path[: -len(".TXT")] + ext)


def test_same_arguments_same_bytes_and_the_corpus_is_untouched(pools):
    (a, _, before_a), (b, _, _) = pools
    assert tree_digest(os.path.join(a, POOL_FOLDER)) == tree_digest(
        os.path.join(b, POOL_FOLDER)
    )
    # timit_prepare reads TRAIN and TEST only: the corpus is the same.
    assert corpus_fingerprint(a) == before_a
    again = make_mini_pool(a, pool_speakers=3, per_speaker=2)
    assert again["reused"]
    for speakers, per_speaker in ((2, 2), (4, 3)):  # fewer speakers, other texts
        with pytest.raises(MiniTimitError, match="delete it to make the pool again"):
            make_mini_pool(a, pool_speakers=speakers, per_speaker=per_speaker)


def test_a_pool_grows_to_the_bytes_of_a_larger_one(pools, mini_corpus, tmp_path):
    """The study's 1x and 2x pools stay inside its 4x pool: 2 speakers grown
    to 3 are the 3-speaker pool made at once, byte for byte."""
    corpus = str(tmp_path / "TIMIT")
    shutil.copytree(mini_corpus, corpus)
    small = make_mini_pool(corpus, pool_speakers=2, per_speaker=2)
    pool = os.path.join(corpus, POOL_FOLDER)
    first_two = tree_digest(pool)
    stray = os.path.join(pool, "DR9", "MXYZ0")  # left by an interrupted growth
    os.makedirs(stray)
    grown = make_mini_pool(corpus, pool_speakers=3, per_speaker=2)
    assert not os.path.exists(os.path.dirname(stray))
    assert tree_digest(pool) == tree_digest(os.path.join(pools[0][0], POOL_FOLDER))
    assert tree_digest(pool) != first_two
    assert not grown["reused"] and grown["grown_from"] == 2
    assert (small["utterances"], grown["utterances"]) == (4, 6)
    assert grown["seconds"] == pytest.approx(pools[0][1]["seconds"], abs=0.05)
    assert make_mini_pool(corpus, pool_speakers=3, per_speaker=2)["reused"]


def test_pool_is_an_unlabelled_source(pools, tmp_path):
    corpus = pools[0][0]
    out = tmp_path / "manifests"
    run_script(["timit_prepare.py", corpus, str(out)])
    labelled = [str(out / f"{s}.json") for s in ("train", "valid", "test")]
    save = str(tmp_path / "unlabelled.json")
    assert (
        prepare_unlabelled(os.path.join(corpus, POOL_FOLDER), save, corpus, labelled)
        == 6
    )


def test_command_line_makes_the_pool(mini_corpus, tmp_path):
    corpus = str(tmp_path / "TIMIT")
    shutil.copytree(mini_corpus, corpus)
    proc = run_script(
        ["tools/make_mini_timit.py", corpus, "--preset", "tiny", "--seed", "7",
         "--pool_speakers", "1", "--pool_per_speaker", "1", "--quiet"]
    )  # fmt: skip
    assert "pool of 1 speakers, 1 utterances" in proc.stdout
