#!/usr/bin/env python3
"""Where does distillation help? The study of docs/kd_study.md, in one command.

    python tools/kd_study.py --jobs 2                  # all of it, resumable
    python tools/kd_study.py --plan                    # what it runs, what is done
    python tools/kd_study.py --groups core ctc --seeds 3
    python tools/kd_study.py --summarize               # tables from finished runs

The demo's setting (``run_demo.py``: CPU-sized teachers and student, the
demo's shared training settings) on the demo's corpus (the mini corpus preset
``demo_core``: 48 training speakers, TIMIT's 24 core-test speakers x 8
sentences = 192 test utterances, 16 dev speakers = 128 valid utterances).
Teachers are trained once, at their own seeds (1000 + K); every student
configuration is run for ``--seeds`` student seeds (2000, 2001, ...), the
baseline too, so each distilled student has a baseline
twin with the same seed, data order and initialisation.

Groups of configurations (``--groups``; by default all, in this order):

- ``core``: no distillation, then average, best, weighted from 3 teachers
  (tea0, tea3, tea5), alpha 0.5, T 1, tau 1: the demo's configuration.
- ``top-k``: the first author's fourth strategy, otherwise as ``core``.
- ``size``: a student of about 1/4 of the teachers' parameters, with and
  without distillation.
- ``ctc``: the attention branch distilled alone (``--distill_ctc False``).
- ``tau``: weighted and best with weight temperature 5 (a real ensemble).
- ``alpha``: best with alpha 0.2 and 0.8.
- ``temperature``: best from a store at T = 2, the original's form and
  Hinton's (``soften_student``).
- ``teachers10``: average, best, weighted from all 10 teacher files.
- ``paper``: the paper's own setting (issue 22). The student is tea0's
  architecture, its encoder initialised from tea0's best checkpoint
  (``pretrain``), trained ``--finetune_epochs`` epochs at the recipe's KD
  learning rate (train_kd.yaml's 0.0005) with alpha 1 (teachers only), T 1,
  best and weighted, from the 3- and the 10-teacher store; alpha 0.5 as a
  variant. Its control, ``paper-labels-only``, is the same run with alpha 0:
  the same initialisation, optimiser and epochs on the labels alone, so a
  gain is not just more training. Each is compared with that control.
- ``unlabelled``: audio the teachers never trained on (issue 23). The corpus
  gets a pool of 192 new speakers reading new sentences (``POOL``, four
  times the training audio; ``1x`` is its first 48 speakers, ``2x`` its
  first 96, ``4x`` all of it; a study folder with the older 96-speaker pool
  has it grown, its speakers unchanged). The 3-teacher store gets an
  unlabelled part over the whole pool. Students: ``pseudo-1x`` (train +
  pool with the teachers' consensus as a hard label, no KD terms:
  self-training), ``average|best|weighted-1x`` (KD on train at alpha 0.5 and
  on the pool at unlabelled_alpha 1), ``oracle-1x`` (train + pool with the
  true phones: the ceiling), the same at ``2x``, and the ``-small`` student
  (1/4 size) with ``weighted-1x`` and its own baseline; the ``-half``
  student (142 k parameters, at most half the teachers' mean) with
  ``weighted-1x`` or ``-2x`` and its own baseline. Each is compared with its
  baseline, each KD configuration with self-training on the same audio, and
  each KD student on the pool with the best teacher (lowest valid PER).
- ``iterate``: past the teachers (issue 32; ``iterate_configurations``).
  Leave-one-out teacher scores (``weighted-loo-<size>``) and the pool
  filtered by the teachers' disagreement (``weighted-loo-filter-<size>``,
  ``MAX_DISAGREEMENT``) at 1x, 2x and 4x, with matched self-training on the
  same audio and labelled-only controls of as many updates; generations 1-3
  of Noisy Student (``genK-4x``: augmentation on the student, generation K
  taught by the teachers and the generation K-1 student of the same seed);
  the teachers trained again at the student seeds.

Each run is a subprocess with the command line a user would type (printed, and
logged under ``<output_folder>/logs``); a finished run (``per_test.txt``) is
skipped, an interrupted one resumes from its checkpoint, so the command can be
stopped and run again at any time. Settings are chosen on valid PER; test PER
is reported.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import run_demo  # noqa: E402
from mtkd_tools.results import (  # noqa: E402
    PLOT_PNG,
    atomic_write,
    group_runs,
    markdown_table,
    notes,
    plot_valid_curves,
    read_run,
    runs_table,
)
from mtkd_tools.significance import (  # noqa: E402
    UTTERANCES_JSON,
    describe,
    paired_bootstrap,
    read_utterances,
    run_edit_counts,
    write_utterances,
)
from run_demo import (  # noqa: E402
    KD_SETTINGS,
    SHARED_SETTINGS,
    STUDENT_SEED,
    STUDENT_SETTINGS,
    Job,
    Scheduler,
    flags,
    student_sizes,
    teacher_file_values,
    teacher_sizes,
    write_teacher_list,
)

CORPUS_PRESET = "demo_core"  # run_demo.py's corpus
CORPUS_PRESETS = ("demo_core", "demo_core_mixed")  # eSpeak NG alone; both
TEACHERS_3 = ["tea0", "tea3", "tea5"]
TEACHERS_10 = [f"tea{k}" for k in range(10)]
TEACHER_WIDTH = 96
STUDENT_WIDTH = 64  # 149 k parameters: about 1/2 of the teachers' mean
SMALL_STUDENT_WIDTH = 36  # about 1/4
# 142 k parameters: at most half the 3 teachers' mean (288 k), issue 23's goal
HALF_STUDENT_WIDTH = 62
GROUPS = (
    "core", "top-k", "size", "ctc", "tau", "alpha", "temperature", "teachers10",
    "paper", "unlabelled", "iterate",
)  # fmt: skip
# The paper's setting: the teacher whose checkpoint starts the student, and
# the learning rate of that fine-tuning (train_kd.yaml's, the original
# student's: a trained model restarted at the teachers' 0.002 would first be
# pushed away from where it is).
PAPER_INIT = "tea0"
PAPER_LR = 0.0005


def configurations():
    """[(name, group, teachers, store temperature, overrides or None)].

    ``overrides`` None is a student without distillation (train_teacher.py);
    otherwise the train_kd.py keys that differ from the demo's students.
    """
    configs = [("baseline", "core", None, None, None)]
    for strategy in ("average", "best", "weighted"):
        configs.append((strategy, "core", "t3", 1.0, {"strategy": strategy}))
    configs.append(("top-k", "top-k", "t3", 1.0, {"strategy": "top-k"}))
    for strategy in ("best", "weighted"):
        configs.append(
            (f"{strategy}-attention-only", "ctc", "t3", 1.0,
             {"strategy": strategy, "distill_ctc": False})
        )  # fmt: skip
        configs.append(
            (f"{strategy}-tau5", "tau", "t3", 1.0,
             {"strategy": strategy, "weight_temperature": 5.0})
        )  # fmt: skip
    for alpha in (0.2, 0.8):
        configs.append(
            (f"best-alpha{alpha}", "alpha", "t3", 1.0,
             {"strategy": "best", "alpha": alpha})
        )  # fmt: skip
    configs.append(("baseline-small", "size", None, None, "small"))
    configs.append(("best-small", "size", "t3", 1.0, {"strategy": "best"}))
    configs.append(("best-T2", "temperature", "t3", 2.0, {"strategy": "best"}))
    configs.append(
        ("best-T2-soft", "temperature", "t3", 2.0,
         {"strategy": "best", "soften_student": True})
    )  # fmt: skip
    for strategy in ("average", "best", "weighted"):
        configs.append(
            (f"{strategy}-10teachers", "teachers10", "t10", 1.0,
             {"strategy": strategy})
        )  # fmt: skip
    paper = {"init": PAPER_INIT}
    configs.append(
        ("paper-labels-only", "paper", "t3", 1.0,
         {**paper, "strategy": "best", "alpha": 0.0})
    )  # fmt: skip
    # (name suffix, teacher set, alpha): the paper's, its alpha 0.5 variant,
    # and the same from all ten teachers.
    variants = (("", "t3", 1.0), ("-alpha0.5", "t3", 0.5), ("-10teachers", "t10", 1.0))
    for suffix, teachers, alpha in variants:
        for strategy in ("best", "weighted"):
            configs.append(
                (f"paper-{strategy}{suffix}", "paper", teachers, 1.0,
                 {**paper, "strategy": strategy, "alpha": alpha})
            )  # fmt: skip
    configs += unlabelled_configurations()
    configs += iterate_configurations()
    return configs


TRAIN_SPEAKERS = 48  # the corpus's training speakers: the pool at "1x"
POOL_SPEAKERS = 192  # four times the training speakers: the pool at "4x"
POOL_SIZES = ("1x", "2x", "4x")
UNLABELLED_SIZES = ("1x", "2x")  # the unlabelled group's (issue 23)
UNLABELLED_KD = {"alpha": 0.5, "unlabelled_alpha": 1.0}  # the demo's alpha on train


def unlabelled_configurations():
    """The ``unlabelled`` group. Overrides may hold ``unlabelled`` (the pool
    size a KD student trains on) and ``oracle`` (a student without
    distillation trained on train + the pool with its true phones)."""
    configs = [("baseline", "unlabelled", None, None, None)]
    configs.append(("weighted", "unlabelled", "t3", 1.0, {"strategy": "weighted"}))
    for size in UNLABELLED_SIZES:
        configs.append(
            (f"pseudo-{size}", "unlabelled", "t3", 1.0,
             {"unlabelled": size, "strategy": "weighted", "alpha": 0.0,
              "unlabelled_alpha": 0.0})
        )  # fmt: skip
        for strategy in ("weighted", "best", "average"):
            configs.append(
                (f"{strategy}-{size}", "unlabelled", "t3", 1.0,
                 {"unlabelled": size, "strategy": strategy, **UNLABELLED_KD})
            )  # fmt: skip
        configs.append((f"oracle-{size}", "unlabelled", None, None, {"oracle": size}))
    for suffix, sizes in (("small", ("1x",)), ("half", UNLABELLED_SIZES)):
        configs.append((f"baseline-{suffix}", "unlabelled", None, None, suffix))
        for size in sizes:
            configs.append(
                (f"weighted-{size}-{suffix}", "unlabelled", "t3", 1.0,
                 {"unlabelled": size, "strategy": "weighted", **UNLABELLED_KD})
            )  # fmt: skip
    # Matched controls (issue 31). A control differs from the student it
    # controls in one thing: the baselines train for as many optimiser updates
    # as the pool students they control (more epochs over the labelled data,
    # the same NewBob schedule and valid selection); self-training keeps the
    # KD student's labelled-row objective (alpha 0.5) and differs only in what
    # the pool rows learn from (the consensus as a hard label).
    configs.append(
        ("baseline-matched", "unlabelled", None, None, {"updates_of": "1x"})
    )  # fmt: skip
    configs.append(
        ("baseline-half-matched", "unlabelled", None, None,
         {"updates_of": "2x"})
    )  # fmt: skip
    configs.append(
        ("pseudo-matched", "unlabelled", "t3", 1.0,
         {"unlabelled": "1x", "strategy": "weighted", **UNLABELLED_KD,
          "unlabelled_alpha": 0.0})
    )  # fmt: skip
    return configs


# Issue 32. The disagreement threshold of the filtered students (the mean
# pairwise edit distance of the teachers' hypotheses per consensus phone, %;
# train_kd.py --unlabelled_max_disagreement). It is to be chosen on valid
# before the runs (tools/consensus_quality.py --thresholds) and written here:
# a run folder made with another value refuses the changed command.
MAX_DISAGREEMENT = 7.5
# The candidates it is chosen from, on valid, by the mean valid PER of
# ``weighted-loo-filter-1x-max<X>`` over seeds (each against
# ``weighted-loo-1x``, no filter). Set from the 60-epoch teachers' store
# (docs/kd_study/iterate/consensus_quality_teachers60.json), whose teachers
# disagree less than the 30-epoch ones: on valid 5 % keeps 45 % of the audio
# (consensus PER 3.32 %), 7.5 % keeps 67 % (3.83 %), 10 % keeps 83 % (4.64 %);
# 15 % and 20 % keep about 98 % and barely filter. 7.5 stands until the
# summary names the choice.
MAX_DISAGREEMENT_CANDIDATES = (5.0, 7.5, 10.0)
# Methods 1 and 3: leave-one-out teacher scores, the pool filtered by the
# teachers' disagreement.
LOO = {"unlabelled_scores": "leave_one_out"}
# A filtered run trains as many updates as the same run without the filter
# (more epochs over less audio), so that the filter differs from no filter
# in the audio alone.
MATCH_UPDATES = {"unlabelled_match_updates": True}
LOO_FILTER = {**LOO, "unlabelled_max_disagreement": MAX_DISAGREEMENT, **MATCH_UPDATES}
# The generations' pool and their noise (Noisy Student): the original
# recipe's augmentation on every generation's student.
GENERATION_POOL = "4x"
NOISE = {"augment": True}
GENERATIONS = 3
# The teachers trained again at the student seeds (the control of "a student
# of at most half their size below the best teacher", seed against seed).
SEEDED_TEACHERS = ("tea0", "tea3")


def iterate_configurations():
    """The ``iterate`` group (issue 32): past the teachers.

    At each pool size (1x, 2x, 4x): ``weighted-<size>`` (today's scores),
    ``weighted-loo-<size>`` (leave-one-out scores), ``weighted-loo-filter-
    <size>`` (and the pool filtered by disagreement), its matched
    self-training ``pseudo-filter-<size>`` (the same audio and labelled-row
    objective, the pool rows on the consensus alone) and
    ``baseline-matched-<size>`` (labelled data alone, as many updates as an
    unfiltered pool student; at 1x the unlabelled group's
    ``baseline-matched``); ``weighted-loo-filter-1x-max<X>``: the 1x
    filtered student at each ``MAX_DISAGREEMENT_CANDIDATES`` threshold, to
    choose the threshold on valid; ``weighted-loo-filter-4x-half`` (142 k
    parameters). Generations on the ``GENERATION_POOL`` with noise:
    ``gen1-<pool>`` from the three teachers, ``genK-<pool>`` from the three
    teachers plus the generation K-1 student of the same seed (a store per
    seed: the teacher key ``t3+gen<K-1>-<pool>``), and ``gen2-alone-<pool>``
    from the generation 1 student alone (Noisy Student's own setting: no
    consensus, so neither leave-one-out scores nor the filter).
    ``teacher-tea0`` and ``teacher-tea3``: those teachers trained again at
    the student seeds."""
    group = "iterate"
    configs = [("baseline", group, None, None, None)]
    for size in POOL_SIZES:
        kd = {"unlabelled": size, "strategy": "weighted", **UNLABELLED_KD}
        if size == "4x":  # 1x and 2x are the unlabelled group's
            configs.append((f"weighted-{size}", group, "t3", 1.0, kd))
            configs.append(
                (f"pseudo-{size}", group, "t3", 1.0,
                 {**kd, "alpha": 0.0, "unlabelled_alpha": 0.0})
            )  # fmt: skip
        configs.append((f"weighted-loo-{size}", group, "t3", 1.0, {**kd, **LOO}))
        configs.append(
            (f"weighted-loo-filter-{size}", group, "t3", 1.0, {**kd, **LOO_FILTER})
        )  # fmt: skip
        configs.append(
            (f"pseudo-filter-{size}", group, "t3", 1.0,
             {**kd, **LOO_FILTER, "unlabelled_alpha": 0.0})
        )  # fmt: skip
        matched = "baseline-matched" + ("" if size == "1x" else f"-{size}")
        configs.append((matched, group, None, None, {"updates_of": size}))
    kd = {"unlabelled": "1x", "strategy": "weighted", **UNLABELLED_KD, **LOO}
    for limit in MAX_DISAGREEMENT_CANDIDATES:
        configs.append(
            (f"weighted-loo-filter-1x-max{limit:g}", group, "t3", 1.0,
             {**kd, "unlabelled_max_disagreement": limit, **MATCH_UPDATES})
        )  # fmt: skip
    configs.append(
        ("weighted-loo-filter-4x-half", group, "t3", 1.0,
         {"unlabelled": "4x", "strategy": "weighted", **UNLABELLED_KD, **LOO_FILTER})
    )  # fmt: skip
    configs.append(("baseline-half", group, None, None, "half"))
    pool = GENERATION_POOL
    kd = {"unlabelled": pool, "strategy": "weighted", **UNLABELLED_KD, **NOISE}
    for k in range(1, GENERATIONS + 1):
        teachers = "t3" if k == 1 else f"t3+gen{k - 1}-{pool}"
        configs.append((f"gen{k}-{pool}", group, teachers, 1.0, {**kd, **LOO_FILTER}))
    configs.append((f"gen2-alone-{pool}", group, f"gen1-{pool}", 1.0, kd))
    for name in SEEDED_TEACHERS:
        configs.append((f"teacher-{name}", group, None, None, {"teacher": name}))
    return configs


def generation_of(key):
    """The student configuration a teacher key takes as a teacher
    (``t3+gen1-4x`` and ``gen1-4x``: ``gen1-4x``), or None."""
    name = key.split("+")[-1]
    return name if name.startswith("gen") else None


# The pool's size in multiples of the training audio (1x: as many utterances
# as train): a student on train + pool sees (1 + this) times the labelled
# data's batches per epoch.
POOL_MULTIPLE = {"1x": 1, "2x": 2, "4x": 4}


def matched_epochs(student_epochs, pool_size):
    """Epochs of a labelled-only control with as many optimiser updates as a
    student trained ``student_epochs`` epochs on train + the ``pool_size``
    pool (same batch size: batches per epoch grow with the utterances)."""
    return student_epochs * (1 + POOL_MULTIPLE[pool_size])


CONFIGS = {c[0]: c for c in configurations()}


def pool_manifests(out, corpus, say, preset=CORPUS_PRESET):
    """Makes the pool (``corpus/POOL``, ``POOL_SPEAKERS``; an older, smaller
    pool grows, its speakers unchanged) and its manifests under
    ``out/unlabelled``: ``<size>.json`` for every pool size (the pool's first
    48, 96 or all 192 speakers) without phones, and ``oracle-<size>.json``:
    train + that pool with its true phones, as a labelled manifest. Made
    once."""
    folder = os.path.join(out, "unlabelled")
    largest = POOL_SIZES[-1]
    done = os.path.join(folder, f"oracle-{largest}.json")
    paths = pool_paths(out)
    if os.path.isfile(done):
        return paths
    argv = ["tools/make_mini_timit.py", corpus, "--preset", preset]
    argv += ["--pool_speakers", str(POOL_SPEAKERS), "--quiet"]
    say(f"pool: $ {shlex.join(['python', *argv])}")
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True)
    from timit_prepare import prepare_timit
    from tools.mini_timit.pool import FIRST_POOL_SENTENCE, POOL_FOLDER
    from unlabelled_prepare import prepare_unlabelled

    os.makedirs(folder, exist_ok=True)
    labelled = [os.path.join(folder, f"{split}.json") for split in SPLIT_NAMES]
    prepare_timit(
        corpus, save_json_train=labelled[0], save_json_valid=labelled[1],
        save_json_test=labelled[2],
    )  # fmt: skip
    prepare_unlabelled(
        os.path.join(corpus, POOL_FOLDER), paths[largest], corpus, labelled
    )
    with open(paths[largest], encoding="utf-8") as f:
        pool = json.load(f)
    with open(labelled[0], encoding="utf-8") as f:
        train = json.load(f)
    for size in POOL_SIZES:
        # Speaker s reads sentences 9000 + 8 s ... 9000 + 8 s + 7.
        end = FIRST_POOL_SENTENCE + 8 * TRAIN_SPEAKERS * POOL_MULTIPLE[size]
        entries = {k: v for k, v in pool.items() if int(k.rsplit("SI", 1)[1]) < end}
        if size != largest:
            atomic_write(paths[size], json.dumps(entries, indent=1) + "\n")
        oracle = dict(train)
        for utt_id, entry in entries.items():
            phn = os.path.splitext(entry["wav"])[0] + ".PHN"
            oracle[utt_id] = {**entry, "phn": " ".join(true_phones(phn))}
        atomic_write(
            os.path.join(folder, f"oracle-{size}.json"),
            json.dumps(oracle, indent=1) + "\n",
        )
    return paths


SPLIT_NAMES = ("train", "valid", "test")


def pool_paths(out):
    """{pool size: its unlabelled manifest} under ``out/unlabelled``."""
    folder = os.path.join(out, "unlabelled")
    return {size: os.path.join(folder, f"{size}.json") for size in POOL_SIZES}


def true_phones(phn_path, phn_set=39):
    """The 39 folded phones of a .PHN file, as timit_prepare reads them."""
    from timit_prepare import _fold_table, _read_phn

    return _read_phn(phn_path, _fold_table(phn_set))


def build_jobs(args, corpus):
    """Teachers, stores, then the students of the chosen groups, seed by seed."""
    out = os.path.abspath(args.output_folder)
    logs = os.path.join(out, "logs")
    common = ["--data_folder", corpus, "--device", args.device, "--noprogressbar"]
    shared = {**SHARED_SETTINGS, "augment": args.augment}
    chosen, names = [], set()

    def choose(c):
        generation = c[2] and generation_of(c[2])
        if generation:  # a generation needs the student that teaches it
            choose(CONFIGS[generation])
        if c[0] not in names:
            names.add(c[0])
            chosen.append(c)

    for c in configurations():  # a name in two groups (baseline) runs once
        if c[1] in args.groups and (not args.models or c[0] in args.models):
            choose(c)
    pool = None
    if any(c[4] and "unlabelled" in c[4] or c[4] and "oracle" in c[4]
           for c in chosen if isinstance(c[4], dict)):  # fmt: skip
        if args.plan or args.summarize:  # names only: nothing is made
            pool = pool_paths(out)
        else:
            pool = pool_manifests(out, corpus, print, args.corpus_preset)
    teacher_sets = {"t3": TEACHERS_3, "t10": TEACHERS_10}
    jobs = []

    def job(name, argv, folder, done_file, after=()):
        new = Job(name, argv, folder, done_file, after,
                  log_file=os.path.join(logs, f"{name}.log"))  # fmt: skip
        jobs.append(new)
        return new

    def add_teacher(name):
        folder = os.path.join(out, "teachers", name)
        settings = {
            **shared,
            **teacher_sizes(name, TEACHER_WIDTH),
            "number_of_epochs": args.teacher_epochs,
            "seed": teacher_file_values(name)["seed"],
        }
        argv = ["train_teacher.py", f"hparams/teachers/{name}.yaml", *common]
        argv += ["--output_folder", folder, *flags(settings)]
        job(name, argv, folder, os.path.join(folder, "per_test.txt"))
        return folder

    def add_store(key, temperature):
        name = f"store-{key}-T{temperature:g}"
        folder = os.path.join(out, "stores", name)
        list_file = os.path.join(folder, "teachers.txt")
        argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
        argv += ["--tea_models_dir", list_file, "--output_folder", folder]
        argv += ["--temperature", str(temperature)]
        members = teacher_sets[key]
        save = job(name, argv, folder, os.path.join(folder, "store_summary.json"),
                   after=members)  # fmt: skip
        folders = [teacher_folders[t] for t in members]
        save.prepare = lambda f=list_file, t=folders: write_teacher_list(
            f, t, "tools/kd_study.py"
        )
        return name, os.path.join(folder, "store")

    def add_unlabelled_part(key, temperature):
        """The store's unlabelled part over the whole pool (its labelled
        parts are reused): the same command with ``--unlabelled``. It
        replaces (``--overwrite``) a part an older study wrote over its 2x
        pool in store format 2 (that study's finished runs stay as they
        are)."""
        store_name, store = stores[(key, temperature)]
        largest = POOL_SIZES[-1]
        name = f"{store_name}-unlabelled-{largest}"
        folder = os.path.join(out, "stores", name)
        argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
        argv += [
            "--tea_models_dir",
            os.path.join(os.path.dirname(store), "teachers.txt"),
        ]
        argv += ["--output_folder", folder, "--store_folder", store]
        argv += ["--temperature", str(temperature)]
        argv += ["--unlabelled", pool[largest], "--overwrite", "True"]
        job(name, argv, folder, os.path.join(folder, "store_summary.json"),
            after=[store_name])  # fmt: skip
        return name

    def add_generation_store(key, temperature, size, seed_index):
        """The store of a generation's teachers at one seed: the teachers of
        ``key`` (``t3+gen1-4x``: the three teachers and the ``gen1-4x``
        student of this seed; ``gen1-4x``: that student alone), labelled
        parts and the unlabelled part over the ``size`` pool in one run."""
        name = f"store-{key}-T{temperature:g}-seed{seed_index}"
        folder = os.path.join(out, "stores", name)
        store = os.path.join(folder, "store")
        if name in {j.name for j in jobs}:
            return name, store
        generation = generation_of(key)
        members = TEACHERS_3 if key.startswith("t3+") else []
        student = os.path.join(out, "students", generation, f"seed{seed_index}")
        list_file = os.path.join(folder, "teachers.txt")
        argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
        argv += ["--tea_models_dir", list_file, "--output_folder", folder]
        argv += ["--temperature", str(temperature), "--unlabelled", pool[size]]
        save = job(name, argv, folder, os.path.join(folder, "store_summary.json"),
                   after=[*members, f"{generation}/seed{seed_index}"])  # fmt: skip
        folders = [teacher_folders[t] for t in members] + [student]
        save.prepare = lambda f=list_file, t=folders: write_teacher_list(
            f, t, "tools/kd_study.py"
        )
        return name, store

    def add_student(name, teachers, temperature, overrides, seed_index):
        width = student_width(name)
        student = {
            **shared,
            **STUDENT_SETTINGS,
            "augment": args.augment,
            **student_sizes(width),
            "number_of_epochs": args.student_epochs,
            "seed": STUDENT_SEED + seed_index,
        }
        folder = os.path.join(out, "students", name, f"seed{seed_index}")
        run_name = f"{name}/seed{seed_index}"
        done = os.path.join(folder, "per_test.txt")
        oracle = isinstance(overrides, dict) and overrides.get("oracle")
        matched = isinstance(overrides, dict) and overrides.get("updates_of")
        seeded = isinstance(overrides, dict) and overrides.get("teacher")
        if seeded:  # a teacher trained again at the student seed
            settings = {**shared, **teacher_sizes(seeded, TEACHER_WIDTH)}
            settings.update(number_of_epochs=args.teacher_epochs, seed=student["seed"])
            argv = ["train_teacher.py", f"hparams/teachers/{seeded}.yaml", *common]
            job(run_name, argv + ["--output_folder", folder, *flags(settings)],
                folder, done)  # fmt: skip
            return
        if matched:
            student["number_of_epochs"] = matched_epochs(args.student_epochs, matched)
        if overrides in (None, "small", "half") or oracle or matched:  # no KD
            argv = ["train_teacher.py", "hparams/teacher.yaml", *common]
            argv += ["--output_folder", folder, "--teacher_name", f"student-{name}"]
            if oracle:  # train + the pool with its true phones
                unl = os.path.join(out, "unlabelled")
                argv += ["--skip_prep", "True"]
                argv += [
                    "--train_annotation",
                    os.path.join(unl, f"oracle-{oracle}.json"),
                ]
                for split in ("valid", "test"):
                    argv += [
                        f"--{split}_annotation",
                        os.path.join(unl, f"{split}.json"),
                    ]
            job(run_name, argv + flags(student), folder, done)
            return
        settings = {**student, **KD_SETTINGS, "temperature": temperature}
        overrides = dict(overrides)
        init = overrides.pop("init", None)
        size = overrides.pop("unlabelled", None)
        if generation_of(teachers):  # its own store at this seed, with the pool
            store_name, store = add_generation_store(
                teachers, temperature, size, seed_index
            )
            after = [store_name]
        else:
            store_name, store = stores[(teachers, temperature)]
            after = [store_name]
            if size:
                after.append(unlabelled_parts[(teachers, temperature)])
        if size:
            overrides["unlabelled"] = pool[size]
        if init:  # the paper's setting: a teacher's architecture and encoder
            settings.update(teacher_sizes(init, TEACHER_WIDTH))
            settings.update(
                number_of_epochs=args.finetune_epochs, lr=PAPER_LR, pretrain=True,
                pretrain_st_dir=teacher_folders[init],
            )  # fmt: skip
            after.append(init)
        settings.update(overrides)
        argv = ["train_kd.py", "hparams/train_kd.yaml", *common]
        argv += ["--output_folder", folder, "--tea_infer_dir", store]
        job(run_name, argv + flags(settings), folder, done, after=after)

    # The scheduler starts runs in list order as their inputs are ready: the
    # order below puts first what the first groups need, so a stopped study
    # has complete groups (all seeds) rather than a little of everything.
    teacher_folders, stores, unlabelled_parts = {}, {}, {}
    for group in GROUPS:
        if group not in args.groups:
            continue
        in_group = [c for c in chosen if c[1] == group]
        for _, _, key, temperature, overrides in in_group:
            if key is None:
                continue
            init = [overrides["init"]] if "init" in overrides else []
            generation = generation_of(key)
            members = teacher_sets.get(key, [])
            if generation:  # a store per seed, made with the students
                members = TEACHERS_3 if key.startswith("t3+") else []
            for name in init + members:
                if name not in teacher_folders:
                    teacher_folders[name] = add_teacher(name)
            if generation:
                continue
            if (key, temperature) not in stores:
                stores[(key, temperature)] = add_store(key, temperature)
            if "unlabelled" in overrides and (key, temperature) not in unlabelled_parts:
                unlabelled_parts[(key, temperature)] = add_unlabelled_part(
                    key, temperature
                )
        for seed_index in range(args.seeds):
            for name, _, key, temperature, overrides in in_group:
                add_student(name, key, temperature, overrides, seed_index)
    return jobs


def make_corpus(args, say, preset=None):
    """The study's corpus under ``<output_folder>/TIMIT``, made once with
    ``preset`` (default ``--corpus_preset``); an existing one made with
    another preset is an error naming both."""
    preset = preset or args.corpus_preset
    corpus = os.path.join(os.path.abspath(args.output_folder), "TIMIT")
    marker = os.path.join(corpus, "MINI_TIMIT.json")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            made_with = json.load(f).get("options", {}).get("preset")
        if made_with != preset:
            raise run_demo.RecipeError(
                f"{corpus} is a mini corpus of the preset {made_with}, not "
                f"{preset}: give another --output_folder for a {preset} study, "
                f"or --corpus_preset {made_with} to go on with this one."
            )
        return corpus
    argv = ["tools/make_mini_timit.py", corpus, "--seed", str(args.corpus_seed)]
    argv += ["--preset", preset, "--quiet"]
    say(f"corpus: $ {shlex.join(['python', *argv])}")
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True)
    return corpus


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output_folder", default="results/kd_study")
    parser.add_argument("--seeds", type=int, default=3, help="student seeds (3)")
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument(
        "--models", nargs="+", metavar="NAME",
        help="only these models of the chosen groups (e.g. baseline best)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teacher_epochs", type=int, default=15)
    parser.add_argument("--student_epochs", type=int, default=15)
    parser.add_argument(
        "--finetune_epochs", type=int, default=15,
        help="epochs of the paper group's students, started from a teacher (15)",
    )  # fmt: skip
    parser.add_argument(
        "--augment", type=lambda text: text.lower() == "true", default=False,
        help="the original's augmentation for every run (default False: at "
        "CPU size it slowed learning; see docs/kd_study.md)",
    )  # fmt: skip
    parser.add_argument("--corpus_seed", type=int, default=1234)
    parser.add_argument(
        "--corpus_preset", choices=CORPUS_PRESETS, default=CORPUS_PRESET,
        help="the mini corpus: demo_core (eSpeak NG, the default) or "
        "demo_core_mixed (half of every split spoken by Flite; issue 36)",
    )  # fmt: skip
    parser.add_argument(
        "--docs_folder", default=os.path.join(REPO, "docs", "kd_study"),
        help="also write the tables here ('' for nowhere)",
    )  # fmt: skip
    parser.add_argument(
        "--confirm", nargs="+", metavar="NAME",
        help="configurations chosen on valid: the summary compares them with "
        "their baseline on the fresh seeds alone (seed indices 3 and up) and on "
        "every seed",
    )  # fmt: skip
    parser.add_argument(
        "--continue_from", metavar="FOLDER",
        help="a results folder of this study committed by an earlier session "
        "(results.json, utterances.json): its runs are not run again, once the "
        "teachers trained here are shown to score the test set exactly as its "
        "teachers; the tables hold both",
    )  # fmt: skip
    parser.add_argument("--plan", action="store_true", help="list runs and exit")
    parser.add_argument(
        "--summarize", action="store_true", help="only write the tables"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    known = {c[0] for c in configurations() if c[1] in args.groups}
    unknown = sorted(set(args.models or ()) - known)
    if unknown:
        sys.exit(
            f"kd_study.py: --models {' '.join(unknown)}: no such model in the "
            f"groups {' '.join(args.groups)}. Models there: "
            f"{' '.join(sorted(known))}."
        )

    def say(text):
        print(text, flush=True)

    corpus = os.path.join(os.path.abspath(args.output_folder), "TIMIT")
    if not (args.plan or args.summarize):
        corpus = make_corpus(args, say)
    jobs = build_jobs(args, corpus)
    if args.plan:
        for job in jobs:
            state = "done" if job.is_done() else "to run"
            say(f"{state:7s} {job.name}: $ {job.command}")
        return
    committed = Committed.read(args.continue_from) if args.continue_from else None
    if not args.summarize:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.time()
        to_run = jobs
        if committed:
            # The teachers first: the committed students count only if the
            # teachers trained here are the ones they learnt from.
            teachers = [job for job in jobs if is_teacher_job(job)]
            say(f"{len(teachers)} teachers first, to check them against "
                f"{args.continue_from}")  # fmt: skip
            Scheduler(teachers, args.jobs, env, say).run()
            committed.check_teachers(teachers)
            to_run = [job for job in jobs if job_key(job) not in committed.runs]
            say(f"{len(jobs) - len(to_run)} runs taken from {args.continue_from}")
        say(f"{len(to_run)} runs, {args.jobs} at a time, {threads} thread(s) each")
        Scheduler(to_run, args.jobs, env, say).run()
        say(f"all runs done in {(time.time() - t0) / 60:.1f} min")
    summarize(args, jobs, say, committed)


def is_teacher_job(job):
    return f"{os.sep}teachers{os.sep}" in job.folder + os.sep


def job_key(job):
    """A student job's key in the committed results (``weighted-1x@2003`` for
    ``weighted-1x/seed3``), or None for teachers and stores."""
    name, _, index = job.name.partition("/seed")
    return f"{name}@{STUDENT_SEED + int(index)}" if index.isdigit() else None


class Committed:
    """The runs of this study committed by an earlier session: a results
    folder's ``results.json`` (``runs``: every figure) and ``utterances.json``
    (per-utterance edit counts). A later session continues the study from
    them instead of running every seed again, once ``check_teachers`` has
    shown that its teachers are the ones those students learnt from."""

    def __init__(self, folder, runs, counts):
        self.folder, self.runs, self.counts = folder, runs, counts

    @classmethod
    def read(cls, folder):
        path = os.path.join(folder, "results.json")
        try:
            with open(path, encoding="utf-8") as f:
                results = json.load(f)
        except (OSError, ValueError) as err:
            raise run_demo.RecipeError(
                f"--continue_from {folder}: cannot read {path} ({err}). Give "
                "the folder of a committed RESULTS.md, results.json and "
                "utterances.json written by this tool."
            ) from None
        counts = read_utterances(os.path.join(folder, UTTERANCES_JSON))
        runs = {run_key(r): r for r in results["runs"] if run_key(r) in counts}
        return cls(folder, runs, counts)

    def check_teachers(self, teacher_jobs):
        """Stops unless every teacher trained here scores every test utterance
        with exactly the committed teacher's edit counts."""
        for job in teacher_jobs:
            run = read_run(job.folder)
            key = f"{job.name}@{run['seed']}"
            if key not in self.counts:
                raise run_demo.RecipeError(
                    f"--continue_from {self.folder} has no run of teacher {key}: "
                    "it is another study. Run this one in its own --output_folder "
                    "without --continue_from."
                )
            here = run_edit_counts(job.folder)
            there = self.counts[key]
            same = here["ids"] == there["ids"] and np.array_equal(
                here["edits"], there["edits"]
            )
            if not same:
                raise run_demo.RecipeError(
                    f"teacher {job.name} trained here ({job.folder}) does not score "
                    f"the test set as the one of {self.folder} (test PER "
                    f"{run['test_PER']:.2f} here): another machine's arithmetic "
                    "gives other teachers, and students of other teachers do "
                    "not belong in one comparison. Run every seed here: drop "
                    "--continue_from (and keep the committed results apart)."
                )


def baseline_of(name):
    """The configuration a student is compared with: same size, no KD (for
    the paper group: the same initialisation trained on the labels alone)."""
    if name.startswith("paper-"):
        return "paper-labels-only"
    suffix = size_suffix(name)
    return f"baseline-{suffix}" if suffix else "baseline"


def matched_baseline_of(name):
    """The labelled-only control with as many updates as the pool student
    ``name`` (``baseline-matched`` for a 1x student of the study's size,
    ``baseline-half-matched`` for a 2x half student), or None."""
    size = pool_size_of(name)
    if not size:
        return None
    suffix = size_suffix(name)
    candidates = (
        [f"baseline-{suffix}-matched"]
        if suffix
        else ["baseline-matched", f"baseline-matched-{size}"]
    )
    for control in candidates:
        overrides = CONFIGS.get(control, (None,) * 5)[4]
        if isinstance(overrides, dict) and overrides.get("updates_of") == size:
            return control
    return None


def pool_size_of(name):
    """'1x' or '2x' for a student on train + the pool (``weighted-2x-half``,
    ``pseudo-1x``, ``oracle-1x``, ``pseudo-matched``), else None."""
    overrides = CONFIGS.get(name, (None,) * 5)[4]
    if isinstance(overrides, dict):
        return overrides.get("unlabelled") or overrides.get("oracle")
    return None


def student_width(name):
    """The width of a student configuration: ``-small`` and ``-half`` names
    are narrower than the study's student."""
    size = size_suffix(name)
    return {"small": SMALL_STUDENT_WIDTH, "half": HALF_STUDENT_WIDTH}.get(
        size, STUDENT_WIDTH
    )


def size_suffix(name):
    """'small' or 'half' for a narrower student's configuration
    (``weighted-1x-half``, ``baseline-half-matched``), else None."""
    for suffix in ("small", "half"):
        if name.endswith(f"-{suffix}") or f"-{suffix}-" in name:
            return suffix
    return None


def study_command(args):
    """The command that makes these runs: the options that differ from the
    defaults (``--output_folder``, ``--jobs`` and ``--docs_folder`` aside)."""
    argv = ["python", "tools/kd_study.py"]
    defaults = vars(parse_args([]))
    for key in ("groups", "models", "seeds", "confirm", "teacher_epochs",
                "student_epochs", "finetune_epochs", "augment",
                "corpus_seed", "corpus_preset"):  # fmt: skip
        value = getattr(args, key)
        if value == defaults[key]:
            continue
        words = value if isinstance(value, list) else [str(value)]
        argv += [f"--{key}", *words]
    return shlex.join(argv)


def run_key(run):
    """The key of a run in ``utterances.json``: ``<configuration>@<seed>``."""
    return f"{run['name']}@{run['seed']}"


def comparison(name, baseline, base_runs, student_runs, counts, label=None):
    """The paired comparison of ``student_runs`` against ``base_runs`` (run
    dicts, pair i with pair i), as a record: ``name``, ``baseline``,
    ``pairs`` ([baseline seed, student seed]), ``baseline_runs`` and
    ``student_runs`` (their keys in ``utterances.json``, so that the line can
    be recomputed from the repository), ``result`` (``paired_bootstrap``:
    speakers and seeds, with the seed-level tests) and ``sentence``."""
    base_keys = [run_key(r) for r in base_runs]
    student_keys = [run_key(r) for r in student_runs]
    result = paired_bootstrap(
        [counts[k] for k in base_keys], [counts[k] for k in student_keys]
    )
    return {
        "name": name,
        "baseline": baseline,
        "pairs": [
            [b["seed"], r["seed"]] for b, r in zip(base_runs, student_runs, strict=True)
        ],
        "baseline_runs": base_keys,
        "student_runs": student_keys,
        "result": result,
        "sentence": describe(name, label or baseline, result),
    }


def _compare(name, baseline, by_name, counts, only=None):
    """``name`` against ``baseline`` over their common seeds (seed i with
    seed i; ``only``: those of these seeds), or None when they share none."""
    if name not in by_name or baseline not in by_name:
        return None
    group, base = by_name[name], by_name[baseline]
    seeds = [s for s in group["seeds"] if s in base["seeds"]]
    seeds = [s for s in seeds if only is None or s in only]
    if not seeds:  # no seed in common: nothing to compare
        return None

    def of(g):
        return [r for r in g["runs"] if r["seed"] in seeds]

    return comparison(name, baseline, of(base), of(group), counts)


def _against_teacher(group, teacher, label, counts, only=None):
    """A student configuration against one teacher run (``only``: those of
    the student's seeds), or None when no seed is left. The teacher is one
    run: every student seed is paired with it, so the tests cover the
    utterances and the students' seeds, not the teacher's."""
    runs = [r for r in group["runs"] if only is None or r["seed"] in only]
    if not runs:
        return None
    return comparison(
        group["name"], teacher["name"], teacher["runs"][:1] * len(runs), runs,
        counts, label,
    )  # fmt: skip


def paper_comparisons(groups, by_name, counts):
    """The paper's own comparison for the ``paper`` group: each configuration
    (the control included) against the teacher that started it, as trained."""
    teacher = by_name.get(PAPER_INIT)
    if teacher is None:
        return []
    return [
        _against_teacher(group, teacher, f"{PAPER_INIT} (as trained)", counts)
        for group in groups
        if group["name"].startswith("paper-")
    ]


def best_teacher(groups):
    """The teacher group with the lowest valid PER and its label, or
    (None, None)."""
    teachers = [g for g in groups if g["kind"] == "teacher"]
    best = min(teachers, key=lambda g: g["valid_PER"]["mean"], default=None)
    return best, best and f"{best['name']} (the best teacher on valid)"


def _pool_student(name):
    """Is ``name`` a KD student on the pool, of any size?"""
    return bool(_pool_kd(name.removesuffix("-small").removesuffix("-half")))


def best_teacher_comparisons(groups, by_name, counts):
    """Each KD student on the pool (any size) against the best teacher, the
    one with the lowest valid PER: can a smaller student match it?"""
    best, label = best_teacher(groups)
    if best is None:
        return []
    return [
        _against_teacher(group, best, label, counts)
        for group in groups
        if _pool_student(group["name"])
    ]


def _pool_kd(name):
    """(strategy, pool size) of a KD student on the pool (``weighted-1x``),
    else None."""
    head, _, size = name.rpartition("-")
    if size in POOL_SIZES and head in ("average", "best", "weighted"):
        return head, size
    return None


def self_training_controls(name):
    """The self-training runs a KD student on the pool is compared with:
    ``pseudo-<size>`` (alpha 0 on train too) and, at 1x, ``pseudo-matched``
    (the KD student's own labelled-row objective: the matched control)."""
    kd = _pool_kd(name)
    if not kd:
        return []
    return [f"pseudo-{kd[1]}"] + (["pseudo-matched"] if kd[1] == "1x" else [])


NO_KD_BASELINES = ("baseline", "baseline-small", "baseline-half", "paper-labels-only")


def baseline_comparisons(groups, by_name, counts):
    """Every student against its same-epoch baseline and, for a student on
    the pool, its matched-update baseline; each matched baseline against its
    same-epoch one (what the extra updates alone give)."""
    out = []
    for group in groups:
        name = group["name"]
        if group["kind"] == "teacher" or name in NO_KD_BASELINES:
            continue
        if name.startswith("baseline") and name.endswith("-matched"):
            out.append(_compare(name, name.removesuffix("-matched"), by_name, counts))
            continue
        out.append(_compare(name, baseline_of(name), by_name, counts))
        matched = matched_baseline_of(name)
        if matched:
            out.append(_compare(name, matched, by_name, counts))
    return out


def iterate_pairs():
    """(configuration, control) of the ``iterate`` group (issue 32), each
    differing in one thing: leave-one-out scores against today's; the filter
    against none (at each candidate threshold too); the filtered student
    against self-training on the same filtered audio; each generation against
    the one before (and generation 1 against the same student without
    noise); the generation-1 student alone as teacher against the
    generation-2 student of the three teachers and it; the half-size student
    against the best teachers trained at its seeds."""
    pairs = []
    for size in POOL_SIZES:
        pairs += [
            (f"weighted-loo-{size}", f"weighted-{size}"),
            (f"weighted-loo-filter-{size}", f"weighted-loo-{size}"),
            (f"weighted-loo-filter-{size}", f"pseudo-filter-{size}"),
        ]
    for limit in MAX_DISAGREEMENT_CANDIDATES:
        pairs.append((f"weighted-loo-filter-1x-max{limit:g}", "weighted-loo-1x"))
    pool = GENERATION_POOL
    pairs.append((f"gen1-{pool}", f"weighted-loo-filter-{pool}"))
    for k in range(2, GENERATIONS + 1):
        pairs.append((f"gen{k}-{pool}", f"gen{k - 1}-{pool}"))
    pairs.append((f"gen2-{pool}", f"gen2-alone-{pool}"))
    for teacher in SEEDED_TEACHERS:
        pairs.append((f"weighted-loo-filter-{pool}-half", f"teacher-{teacher}"))
    return pairs


def iterate_comparisons(groups, by_name, counts):
    """The ``iterate_pairs`` whose two configurations have runs."""
    return [
        _compare(name, control, by_name, counts) for name, control in iterate_pairs()
    ]


def self_training_comparisons(groups, by_name, counts):
    """Each KD student on the pool against self-training on the same audio:
    what the teachers' distributions add to the extra audio with their
    consensus as a hard label."""
    return [
        _compare(group["name"], control, by_name, counts)
        for group in groups
        for control in self_training_controls(group["name"])
    ]


def _mean_test_per(group, seeds):
    values = [r["test_PER"] for r in group["runs"] if r["seed"] in seeds]
    return sum(values) / len(values)


def oracle_gaps(groups, by_name):
    """Sentences: how much of the gap between the baseline and the oracle
    (the pool with its true phones) each student on the pool closes, from
    mean test PERs over the seeds the three share."""
    base = by_name.get("baseline")
    out = []
    for size in POOL_SIZES:
        oracle = by_name.get(f"oracle-{size}")
        if not (base and oracle):
            continue
        parts = []
        for group in groups:
            name = group["name"]
            if name != f"pseudo-{size}" and (_pool_kd(name) or ("", ""))[1] != size:
                continue
            seeds = set(base["seeds"]) & set(oracle["seeds"]) & set(group["seeds"])
            if not seeds:
                continue
            b, o = _mean_test_per(base, seeds), _mean_test_per(oracle, seeds)
            g = _mean_test_per(group, seeds)
            share = f"{100 * (b - g) / (b - o):.0f} %" if b > o else "- (no gap)"
            parts.append(
                f"{name} {share} (baseline {b:.2f}, {name} {g:.2f}, oracle "
                f"{o:.2f}; {len(seeds)} seed(s))"
            )
        if parts:
            out.append(
                f"Share of the gap between the baseline and oracle-{size} (train "
                f"+ pool with its true phones) closed, mean test PER: "
                + "; ".join(parts)
                + "."
            )
    return out


def threshold_choice(by_name):
    """The sentence that chooses ``MAX_DISAGREEMENT`` on valid: of the
    unfiltered ``weighted-loo-1x`` and each ``weighted-loo-filter-1x-max<X>``,
    the one with the lowest mean valid PER, once all of them have runs at the
    same seeds (else None: no choice from unequal evidence). Test PER plays
    no part."""
    # (label, configuration, threshold); the unfiltered student competes.
    entries = [("no filter", "weighted-loo-1x", None)] + [
        (f"{limit:g} %", f"weighted-loo-filter-1x-max{limit:g}", limit)
        for limit in MAX_DISAGREEMENT_CANDIDATES
    ]
    groups = [by_name.get(name) for _, name, _ in entries]
    if any(g is None for g in groups) or len({tuple(g["seeds"]) for g in groups}) > 1:
        return None
    valid = [g["valid_PER"]["mean"] for g in groups]
    best = min(range(len(entries)), key=lambda i: valid[i])
    seeds = groups[0]["seeds"]
    figures = ", ".join(
        f"{label} {v:.2f} %" for (label, _, _), v in zip(entries, valid, strict=True)
    )
    head = (
        f"The disagreement threshold, chosen on valid (mean valid PER over "
        f"{len(seeds)} seed(s), {min(seeds)}-{max(seeds)}: {figures}): "
    )
    _, name, limit = entries[best]
    if limit is None:
        return head + (
            "no threshold is below the unfiltered student: the filter is not chosen."
        )
    now = "as set"
    if limit != MAX_DISAGREEMENT:
        now = f"set it (now {MAX_DISAGREEMENT:g})"
    return head + f"{limit:g} % ({name}); MAX_DISAGREEMENT in tools/kd_study.py: {now}."


def confirmations(args, by_name, groups, counts):
    """``--confirm NAME``: the configuration chosen on valid against its
    controls (its baselines, self-training, and for a KD student on the pool
    the best teacher on valid) on the fresh seeds alone (seed indices 3 and
    up, which took no part in choosing it), then on every seed."""
    fresh = {STUDENT_SEED + i for i in range(3, args.seeds)}
    best, label = best_teacher(groups)
    out = []
    for name in args.confirm or ():
        if name not in by_name:
            continue
        makers = []
        if best is not None and _pool_student(name):
            makers.append(
                lambda only, n=name: _against_teacher(by_name[n], best, label,
                                                      counts, only)
            )  # fmt: skip
        controls = [baseline_of(name), matched_baseline_of(name)]
        for control in controls + self_training_controls(name):
            if control:
                makers.append(
                    lambda only, n=name, c=control: _compare(
                        n, c, by_name, counts, only
                    )
                )
        for make in makers:
            for seeds, only in (("fresh seeds", fresh), ("every seed", None)):
                record = make(only)
                if record:
                    record["seeds"] = seeds
                    record["sentence"] = f"{seeds}: {record['sentence']}"
                    out.append(record)
    return out


def summarize(args, jobs, say, committed=None):
    """RESULTS.md, results.json and valid_per.png of the finished runs, in the
    output folder and in ``--docs_folder``: teachers, then every configuration
    (mean ± std over seeds), and each distilled configuration against its
    baseline with the paired bootstrap, seed i paired with seed i."""
    runs, counts = [], {}
    for job in jobs:
        if job.name.startswith("store-"):
            continue
        if job.is_done():
            run = read_run(job.folder)
            run["name"] = job.name.split("/")[0]  # the configuration, not strategy
            counts[run_key(run)] = run_edit_counts(run["folder"])
        elif committed and job_key(job) in committed.runs:  # an earlier session's
            run = committed.runs[job_key(job)]
            counts[run_key(run)] = committed.counts[run_key(run)]
        else:
            continue
        runs.append(run)
    groups = group_runs(runs)
    by_name = {group["name"]: group for group in groups}
    makers = (baseline_comparisons, paper_comparisons, self_training_comparisons,
              best_teacher_comparisons, iterate_comparisons)  # fmt: skip
    comparisons, seen = [], set()
    for make in makers:
        for record in make(groups, by_name, counts):
            if record and (record["name"], record["baseline"]) not in seen:
                seen.add((record["name"], record["baseline"]))
                comparisons.append(record)
    sentences = notes(groups, comparisons) + oracle_gaps(groups, by_name)
    choice = threshold_choice(by_name)
    sentences += [choice] if choice else []
    confirmed = confirmations(args, by_name, groups, counts)
    if confirmed:
        sentences.append(
            f"Confirmation of {', '.join(args.confirm)}, chosen on valid before "
            "its fresh seeds were run:"
        )
        sentences += [record["sentence"] for record in confirmed]
    taken = committed.runs if committed else {}
    done = sum(job.is_done() or job_key(job) in taken for job in jobs)
    total = len(jobs)
    lines = [
        "# Distillation study: results",
        "",
        f"`{study_command(args)}` ({done} of {total} runs finished; "
        f"groups: {', '.join(args.groups)}; seeds per configuration: "
        f"{args.seeds}; teacher epochs {args.teacher_epochs}, student epochs "
        f"{args.student_epochs}).",
        "",
        markdown_table(groups),
        "",
        *[f"- {sentence}" for sentence in sentences],
        "",
        "Every run:",
        "",
        runs_table(runs),
        "",
        f"![valid PER per epoch]({PLOT_PNG})",
        "",
    ]
    models = [{k: v for k, v in g.items() if k != "runs"} for g in groups]
    payload = {"runs": runs, "models": models, "comparisons": comparisons}
    payload["confirmations"] = confirmed
    for folder in (os.path.abspath(args.output_folder), args.docs_folder):
        if not folder:
            continue
        os.makedirs(folder, exist_ok=True)
        plot_valid_curves(groups, os.path.join(folder, PLOT_PNG))
        atomic_write(os.path.join(folder, "RESULTS.md"), "\n".join(lines))
        atomic_write(
            os.path.join(folder, "results.json"),
            json.dumps(payload, indent=1, default=str) + "\n",
        )
        write_utterances(os.path.join(folder, UTTERANCES_JSON), counts)
    say("\n".join(lines[4:-3]))


if __name__ == "__main__":
    try:
        main()
    except (run_demo.RecipeError, subprocess.CalledProcessError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
