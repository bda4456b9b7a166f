"""The README's "Your own data" commands, run as written (issue 34).

The commands are read from the README's section, so a changed command is the
command tested. They run in a folder of their own (``hparams`` linked in, so
the README's relative paths hold) on the tiny mini corpus, with its SA
sentences copied to a folder as "your own recordings"; only test sizes and
one epoch are added to each command.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, SCRIPT_ENV, TINY_MODEL, TINY_RUN

from mtkd.store.format import unlabelled_part_files

SECTION = "Your own data"
PLACEHOLDERS = {"/path/to/TIMIT": "corpus", "/path/to/recordings": "recordings"}
# What each command gets added: test sizes, one epoch, the CPU.
QUIET = ["--device", "cpu", "--noprogressbar"]
ADDED = {
    "train_teacher.py": [*TINY_MODEL, *TINY_RUN, *QUIET],
    "slurm/teacher_list.py": [],
    "save_teachers.py": QUIET,
    "train_kd.py": [*TINY_MODEL, *TINY_RUN, "--num_workers", "0", *QUIET],
}


def readme_commands():
    """The commands of the README's "Your own data" section, one argv each."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = re.search(rf"^## {SECTION}\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, f"the README has no section '## {SECTION}'"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


def sa_recordings(corpus, folder):
    """TIMIT's SA sentences of the corpus, copied to a folder of recordings;
    returns how many."""
    paths = sorted(glob.glob(os.path.join(corpus, "TRAIN", "*", "*", "SA?.WAV")))
    for path in paths:
        speaker = os.path.basename(os.path.dirname(path))
        os.makedirs(os.path.join(folder, speaker), exist_ok=True)
        shutil.copy(path, os.path.join(folder, speaker, os.path.basename(path)))
    return len(paths)


@pytest.mark.slow  # three teachers, a store, a student: .ci/run's slow step
def test_the_readme_commands_for_your_own_data_run_end_to_end(mini_corpus, tmp_path):
    commands = readme_commands()
    scripts = [argv[1] for argv in commands]
    assert scripts == [
        "train_teacher.py", "train_teacher.py", "train_teacher.py",
        "slurm/teacher_list.py", "save_teachers.py", "train_kd.py",
    ]  # fmt: skip
    assert all(argv[0] == "python" for argv in commands)
    kd_options = commands[-1]
    for option, value in (
        ("--strategy", "weighted"),
        ("--alpha", "0.5"),
        ("--unlabelled_alpha", "1"),
        ("--pretrain", "False"),
    ):
        assert kd_options[kd_options.index(option) + 1] == value  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(os.path.join(REPO, "hparams"), work / "hparams")
    paths = {"corpus": mini_corpus, "recordings": str(tmp_path / "recordings")}
    recordings = sa_recordings(mini_corpus, paths["recordings"])
    used = set()
    outputs = {}
    for argv in commands:
        script, args = argv[1], argv[2:]
        for text, name in PLACEHOLDERS.items():
            used.update(name for arg in args if arg == text)
            args = [paths[name] if arg == text else arg for arg in args]
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, script), *args, *ADDED[script]],
            cwd=work, env=SCRIPT_ENV, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stderr[-4000:]}"
        assert "torchvision" not in proc.stderr
        outputs[script] = proc
    assert used == {"corpus", "recordings"}

    # The store holds the recordings' part; the student trained on them.
    store = work / "results" / "save_teachers" / "store"
    assert len(unlabelled_part_files(str(store))) == 1
    (student,) = glob.glob(str(work / "results" / "student_weighted" / "*"))
    with open(os.path.join(student, "data_seen.json"), encoding="utf-8") as f:
        seen = json.load(f)
    assert seen["labelled"]["utterances"] == 48
    unlabelled = seen["unlabelled"]["utterances"]
    assert unlabelled + seen["unlabelled_empty_consensus"] == recordings == 12
    assert seen["unlabelled_alpha"] == 1
    model = outputs["train_kd.py"].stdout.strip().splitlines()[-1]
    assert model.startswith(student) and os.path.isfile(model)
    # Every train log writes its PERs as plain percentages.
    for log in glob.glob(str(work / "results" / "*" / "*" / "train_log.txt")):
        text = open(log, encoding="utf-8").read()
        assert "valid PER: " in text and not re.search(r"PER: [0-9.]+e", text)
