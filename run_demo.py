#!/usr/bin/env python3
"""The whole recipe in one command: teachers, store, students with and without KD.

    python run_demo.py                      # mini corpus, one seed
    python run_demo.py --seeds 3            # the students at 3 seeds each
    python run_demo.py --quick              # tiny smoke run, under 3 minutes
    python run_demo.py --unlabelled         # + audio the teachers never saw
    python run_demo.py --data_folder /path/to/TIMIT --device cuda

Runs the three stages exactly as a user would, as subprocesses with the same
command lines (each one is printed, and logged in ``<output_folder>/logs/``):

1. makes the mini corpus (``tools/make_mini_timit.py --preset demo_core``:
   TIMIT's 24 core-test speakers, 192 test and 128 valid utterances) unless
   ``--data_folder`` is given (any TIMIT-format corpus, real TIMIT included);
2. trains K teachers with ``train_teacher.py hparams/teachers/teaK.yaml``:
   they differ the way tea0..tea9 do (dropout, depth, width, decoder cell,
   augmentation, seed), at CPU size (see ``teacher_sizes``);
3. writes the teacher list file and runs ``save_teachers.py``;
4. trains one student architecture, smaller than the teachers, once per
   strategy and seed with the same seed and training settings: without
   distillation (``train_teacher.py``, named student-baseline) and with
   ``train_kd.py --strategy S`` for each S of ``--strategies`` (default: best
   and weighted; ``--strategies average best weighted`` adds the third of the
   paper's); ``--seeds N`` does this for the
   student seeds 2000, 2001, ..., 2000 + N - 1 (plus ``--seed``), each in
   ``students/<strategy>/seed<S>/``;
5. writes ``RESULTS.md``, ``results.json`` and ``valid_per.png``
   (mtkd_tools/results.py):
   one row per model, mean +- std over seeds, and under it each distilled
   student against the baseline: PER difference, 95 % CI and p-value of a
   paired bootstrap over the test utterances, seed i against seed i
   (mtkd_tools/significance.py, docs/results-and-significance.md).

``--unlabelled`` (issue 23; docs/kd_study.md "Audio the teachers never
trained on") gives the corpus a pool of new speakers as much audio as train
(``POOL``, 48 speakers; its phones are not used), writes the store's
unlabelled part on it, and trains every distilled student on train + the
pool (``--unlabelled``, alpha 0.5 on train, the teachers alone on the pool),
with one more student, ``pseudo``: train + the pool with the teachers'
consensus as a hard label there (self-training) and the distilled students'
own objective on train, so that the table shows what the teachers'
distributions add to the extra audio. The baseline trains twice the epochs
on train alone: every student takes as many optimiser updates (a control
differs in one thing). Its default output folder is
``results/demo_unlabelled``. ``--pool_multiple 2`` or ``4`` (issue 32) makes
the pool that many times train's audio (96 or 192 speakers at the demo's
size); the baseline then trains 3 or 5 times the epochs, and the default
output folder is ``results/demo_unlabelled_<M>x``.

Seeds: the teachers are trained once, at their own seeds, whatever ``--seeds``
says; only the students' seed varies. The question the demo asks is whether
distilling *these* teachers helps *this* student, so the teachers are an input
like the corpus: one teacher store serves every seed, each KD student of seed
i is compared with the baseline of the same seed i, and what the seeds measure
is the students' own seed-to-seed variance, which is what decides whether a
KD-minus-baseline difference is real. Retraining the teachers per seed would
multiply the teachers' time and the store by N and mix a second question in
(would other teachers of the same recipe help as much?); ask that one
separately with ``--seed`` (it shifts every run's seed, teachers included)
and another ``--output_folder``.

Runs without a dependency between them go side by side (``--jobs``, default 2
on CPU: one torch thread each). A finished run is not redone when the demo is
run again, an interrupted one resumes from its checkpoint; a run folder made
with other options is an error (use another ``--output_folder``).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import yaml

from mtkd import RecipeError
from mtkd.hparams import OPTION_ALIASES
from mtkd.runs import RunFolder
from mtkd.teachers import write_teacher_list
from mtkd.writable import check_output_folder
from mtkd_tools.machine import cpu_model
from mtkd_tools.results import (
    COST_COLUMNS,
    PLOT_PNG,
    add_costs,
    group_runs,
    log_line_values,
    read_run,
    test_files,
    write_results,
)
from tools.mini_timit import PRESETS, MiniTimitError, existing_corpus

REPO = os.path.dirname(os.path.abspath(__file__))

# Teachers in the order the demo takes them (--num_teachers K takes the first
# K): the original's teacher 0, then the most different ones.
TEACHER_ORDER = ["tea0", "tea3", "tea5", "tea9", "tea4", "tea7", "tea6", "tea8"]

# Training settings every run of the demo shares, teachers and students alike
# (students differ from the baseline by distillation only). Why these and not
# the original's: at CPU size the attention decoder learns late, so greedy CTC
# on valid keeps checkpoints and drives NewBob (steady from epoch 2 on), a
# larger CTC weight and learning rate make the encoder converge within a few
# hundred updates, and the test search adds CTC scores to the attention beam.
SHARED_SETTINGS = {
    "lr": 0.002,
    "ctc_weight": 0.5,
    "dec_dropout": 0.1,
    "selection_metric": "CTC_PER",
    "valid_beam_size": 1,
    "test_beam_size": 8,
    "decode_ctc_weight": 0.4,
    # The original's eos_threshold 1.5 lets a small model's beam search stop
    # only when eos is nearly the top label: hypotheses ran to the maximum
    # length (student test PER 33.8 vs 17.8 with 10, same checkpoint).
    "beam_options": {
        "min_decode_ratio": 0.0,
        "max_decode_ratio": 1.0,
        "eos_threshold": 10.0,
    },
    "time_pooling_size": 3,
    "num_workers": 0,
    # The original's augmentation (tea0, tea2, student) off for every run: at
    # CPU size and 12 epochs it slowed learning (tea0 valid greedy-CTC PER at
    # epoch 5: 56.0 % with it, 22.5 % without; docs/kd_study.md).
    "augment": False,
}
# The student's own keys, also given to the baseline (train_kd.yaml sets the
# original student's dropout 0.25, CTC weight 0.1 and lr 5e-4 otherwise).
STUDENT_SETTINGS = {"dropout": 0.15, "augment": False, "batch_size": 8}
KD_SETTINGS = {"alpha": 0.5, "temperature": 1.0, "pretrain": False}
STRATEGIES = ("average", "best", "weighted", "top-k")
# The demo's students. "average" is left out by default: it was the worst of
# the three in the study (docs/kd_study.md: +0.82 PER points against the
# baseline at 15 epochs, p = 0.007), and a third distilled student would run
# alone after the other two, 7 of the demo's 30 minutes on 2 cores.
DEMO_STRATEGIES = ("best", "weighted")
STUDENT_SEED = 2000  # train_kd.yaml's; seed i of --seeds N is STUDENT_SEED + i
# The first line of a --quick RESULTS.md: its models are trained for one
# epoch on 48 utterances, and their figures are no measurement of anything.
SMOKE_RUN_NOTE = (
    "**Smoke run (`--quick`): these figures are not results.** Tiny models, "
    "one epoch, the tiny corpus: the run checks that every stage works; its "
    "PERs (often above 100 %) and tests say nothing about distillation."
)

DEMO = {
    "preset": "demo_core",
    "num_teachers": 3,
    "teacher_width": 96,
    "student_width": 64,
    "teacher_epochs": 15,
    "student_epochs": 15,
}
QUICK = {
    "preset": "tiny",
    "num_teachers": 2,
    "teacher_width": 24,
    "student_width": 16,
    "teacher_epochs": 1,
    "student_epochs": 1,
}
QUICK_SETTINGS = {"test_beam_size": 2, "lr": 0.003}
# --unlabelled: pool speakers (as many as the preset's training speakers, so
# the pool is as much audio as train), and the self-training student's keys:
# the distilled students' own objective on train (alpha 0.5), the consensus as
# a hard label on the pool: the matched control differs in that alone.
POOL_SPEAKERS = {"demo_core": 48, "tiny": 6}
SELF_TRAINING = {"unlabelled_alpha": 0.0}
# With --unlabelled every student but the baseline sees train + the pool (as
# much audio again, --pool_multiple times) each epoch: the baseline trains
# 1 + pool_multiple times the epochs, so that all of them take the same
# number of optimiser updates.
POOL_MULTIPLES = (1, 2, 4)


def matched_baseline_epochs(args):
    """How many times the students' epochs the baseline trains: 1, or with
    --unlabelled 1 + --pool_multiple (as many optimiser updates)."""
    return 1 + args.pool_multiple if args.unlabelled else 1


class DemoError(RecipeError):
    """A demo run that cannot go on (failed stage, stale folder)."""


def flags(settings):
    """{key: value} -> ["--key", "value", ...] as the scripts take them."""
    out = []
    for key, value in settings.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        out += [f"--{key}", text.removesuffix("\n...").strip()]
    return out


def teacher_file_values(name):
    """The keys hparams/teachers/<name>.yaml changes (plain values only)."""
    with open(os.path.join(REPO, "hparams", "teachers", f"{name}.yaml")) as f:
        values = yaml.safe_load(f)
    values.pop("base", None)
    return values


def teacher_sizes(name, width):
    """CPU-sized architecture of teacher ``name``, keeping its differences.

    Paper sizes scale by ``width / 512``: tea0's 4 x 512 LiGRU and 2 x 512 DNN
    become 2 x ``width`` and 1 x ``width``; one RNN layer more (tea3, tea8) stays
    one more, 320 neurons (tea5, tea6) become 320/512 of ``width``, one CNN block
    fewer (tea6) stays one fewer; dropout, decoder cell, batch size, speed
    perturbation and seed are the teacher file's own.
    """
    own = teacher_file_values(name)
    scale = width / 512
    sizes = {
        "cnn_blocks": own.get("cnn_blocks", 2) - 1,
        "cnn_channels": [16],
        "rnn_layers": own.get("rnn_layers", 4) - 2,
        "rnn_neurons": round(own.get("rnn_neurons", 512) * scale),
        "dnn_blocks": 1,
        "dnn_neurons": round(own.get("dnn_neurons", 512) * scale),
        "emb_size": 32,
        "dec_neurons": width,
        "attn_dim": width,
    }
    return sizes


def student_sizes(width):
    """The student: tea0's shape at CPU size, narrower than the teachers."""
    return {
        "cnn_blocks": 1,
        "cnn_channels": [16],
        "rnn_layers": 2,
        "rnn_neurons": width,
        "dnn_blocks": 1,
        "dnn_neurons": width,
        "emb_size": 32,
        "dec_neurons": width,
        "attn_dim": width,
    }


class Job:
    """One stage run: a command line, where it writes, what it waits for."""

    def __init__(self, name, argv, folder, done_file, after=(), log_file=None):
        self.name, self.argv, self.folder = name, argv, folder
        self.done_file, self.after = done_file, list(after)
        self.log_file = log_file
        self.proc = self.started = None
        self.log_lines_seen = 0
        self.prepare = None  # called right before starting (teacher list file)

    @property
    def command(self):
        return shlex.join([os.path.basename(sys.executable), *self.argv])

    def is_done(self):
        return os.path.isfile(self.done_file)


def _original_names(command):
    """The command with each option under the original recipe's name: a
    folder made with ``--tea_models_dir`` is the run ``--teacher_list`` makes."""
    for alias, key in OPTION_ALIASES.items():
        command = command.replace(f" --{alias} ", f" --{key} ")
    return command


def check_same_command(job):
    """A run folder remembers its command; another command there is an error
    (an option under its other name is the same command)."""
    path = os.path.join(job.folder, "demo_command.txt")
    if os.path.isfile(path):
        with open(path) as f:
            before = f.read().strip()
        if _original_names(before) != _original_names(job.command):
            raise DemoError(
                f"{job.folder} was made by another command:\n  {before}\n"
                f"not\n  {job.command}\nRemove that folder or give another "
                "--output_folder."
            )
    else:
        os.makedirs(job.folder, exist_ok=True)
        with open(path, "w") as f:
            f.write(job.command + "\n")


class Scheduler:
    """Runs jobs as subprocesses, ``jobs`` at a time, in dependency order."""

    def __init__(self, jobs, parallel, env, say):
        self.jobs, self.parallel, self.env, self.say = jobs, parallel, env, say
        self.t0 = time.time()

    def clock(self):
        minutes, seconds = divmod(int(time.time() - self.t0), 60)
        return f"{minutes:3d}:{seconds:02d}"

    def run(self):
        pending = [job for job in self.jobs if not self.skip(job)]
        done = {job.name for job in self.jobs if job.is_done()}
        running = []
        while pending or running:
            for job in list(pending):
                if len(running) >= self.parallel:
                    break
                if all(name in done for name in job.after):
                    pending.remove(job)
                    self.start(job)
                    running.append(job)
            time.sleep(2)
            for job in list(running):
                self.show_progress(job)
                if job.proc.poll() is None:
                    continue
                running.remove(job)
                self.finish(job, running)
                done.add(job.name)

    def skip(self, job):
        if job.is_done():
            check_same_command(job)
            self.say(f"{self.clock()}  {job.name}: already done ({job.folder})")
            return True
        return False

    def start(self, job):
        if job.prepare:
            job.prepare()
        check_same_command(job)
        self.say(f"{self.clock()}  {job.name}: start\n           $ {job.command}")
        os.makedirs(os.path.dirname(job.log_file), exist_ok=True)
        log = open(job.log_file, "a")
        job.proc = subprocess.Popen(
            [sys.executable, *job.argv],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        job.started = time.time()

    def show_progress(self, job):
        """Prints the new epoch lines of the run's train log, shortened."""
        path = RunFolder(job.folder).train_log
        if not os.path.isfile(path):
            return
        with open(path) as f:
            lines = f.read().splitlines()
        for line in lines[job.log_lines_seen :]:
            self.say(f"{self.clock()}  {job.name}: {short_log_line(line)}")
        job.log_lines_seen = len(lines)

    def finish(self, job, running):
        seconds = time.time() - job.started
        if job.proc.returncode == 0 and job.is_done():
            self.say(f"{self.clock()}  {job.name}: done in {seconds:.0f} s")
            return
        for other in running:
            other.proc.terminate()
        with open(job.log_file) as f:
            tail = "".join(f.readlines()[-25:])
        raise DemoError(
            f"{job.name} failed (exit {job.proc.returncode}) after {seconds:.0f} s."
            f" Its log: {job.log_file}\n--- last lines ---\n{tail}"
            "Fix the cause and run the demo again: finished runs are kept, "
            "the failed one resumes from its last checkpoint."
        )


def _percent(value):
    """'235.12' -> '235.12 %' (the train log writes PERs with two decimals;
    an older log's '2.35e+02' shows as '235.00 %')."""
    try:
        return f"{float(value):.2f} %"
    except (TypeError, ValueError):
        return "?"


def short_log_line(line):
    """'epoch: 3, lr: ..., time_s: 28.1 - train ... - valid PER: 105.03, valid
    CTC_PER: 43.02' -> 'epoch 3: valid PER 105.03 % (attention search), valid
    CTC PER 43.02 % (greedy CTC) (28.1 s)'. Both figures, by the names the
    results tables use: PER is the attention search's, CTC PER greedy CTC's
    (the demo's selection metric). Any other line (the train log's note on a
    PER above 100 %) is shown as it is."""
    parts = log_line_values(line)
    if "epoch" in parts:
        return (
            f"epoch {parts['epoch']}: valid PER {_percent(parts.get('valid PER'))} "
            f"(attention search), valid CTC PER "
            f"{_percent(parts.get('valid CTC_PER'))} (greedy CTC) "
            f"({parts.get('time_s', '?')} s)"
        )
    if "test PER" in parts:
        return (
            f"test PER {_percent(parts['test PER'])} (attention beam search), "
            f"test CTC PER {_percent(parts.get('test CTC_PER'))} (greedy CTC)"
        )
    return line


def teacher_names(args):
    """The teacher files the demo trains: --teachers, or the first K in order."""
    return args.teachers or TEACHER_ORDER[: args.num_teachers]


def build_jobs(args, data_folder):
    """The demo's runs, in the order they should start."""
    out = os.path.abspath(args.output_folder)
    logs = os.path.join(out, "logs")
    shared = {**SHARED_SETTINGS, **(QUICK_SETTINGS if args.quick else {})}
    common = ["--data_folder", data_folder, "--device", args.device]
    common += ["--noprogressbar"]
    teachers = teacher_names(args)
    jobs = []

    for name in teachers:
        folder = os.path.join(out, "teachers", name)
        settings = {
            **shared,
            **teacher_sizes(name, args.teacher_width),
            "number_of_epochs": args.teacher_epochs,
            "seed": teacher_file_values(name)["seed"] + args.seed,
        }
        argv = ["train_teacher.py", f"hparams/teachers/{name}.yaml", *common]
        argv += ["--output_folder", folder, *flags(settings)]
        jobs.append(
            Job(name, argv, folder, RunFolder(folder).per_test_file,
                log_file=os.path.join(logs, f"{name}.log"))
        )  # fmt: skip
    teacher_jobs = [job.name for job in jobs]

    store_folder = os.path.join(out, "save_teachers")
    list_file = os.path.join(out, "teachers.txt")
    argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
    argv += ["--teacher_list", list_file, "--output_folder", store_folder]
    if args.unlabelled:
        argv += ["--unlabelled", pool_folder(data_folder)]
    save = Job(
        "save_teachers", argv, store_folder,
        os.path.join(store_folder, "store_summary.json"), after=teacher_jobs,
        log_file=os.path.join(logs, "save_teachers.log"),
    )  # fmt: skip
    teacher_folders = [job.folder for job in jobs[: len(teacher_jobs)]]
    save.prepare = lambda: write_teacher_list(list_file, teacher_folders, "run_demo.py")

    # Seed by seed (baseline, then the distilled students), so that a demo
    # stopped early leaves whole seeds; baselines need no teacher and start
    # as soon as a slot is free.
    for seed in student_seeds(args):
        student = {
            **shared,
            **STUDENT_SETTINGS,
            **student_sizes(args.student_width),
            "number_of_epochs": args.student_epochs,
            "seed": seed,
        }
        folder = student_folder(out, "baseline", seed)
        argv = ["train_teacher.py", "hparams/teacher.yaml", *common]
        argv += ["--output_folder", folder, "--teacher_name", "student-baseline"]
        epochs = args.student_epochs * matched_baseline_epochs(args)
        argv += flags({**student, "number_of_epochs": epochs})
        name = f"student-baseline-seed{seed}"
        jobs.append(
            Job(name, argv, folder, RunFolder(folder).per_test_file,
                log_file=os.path.join(logs, f"{name}.log"))
        )  # fmt: skip
        if save not in jobs:
            jobs.append(save)
        for strategy in student_strategies(args):
            folder = student_folder(out, strategy, seed)
            argv = ["train_kd.py", "hparams/train_kd.yaml", *common]
            argv += ["--output_folder", folder]
            argv += ["--strategy", "weighted" if strategy == "pseudo" else strategy]
            argv += ["--tea_infer_dir", os.path.join(store_folder, "store")]
            argv += flags({**student, **KD_SETTINGS})
            if args.unlabelled:
                argv += ["--unlabelled", pool_folder(data_folder)]
                argv += flags(SELF_TRAINING if strategy == "pseudo" else {})
            name = f"student-{strategy}-seed{seed}"
            jobs.append(
                Job(name, argv, folder, RunFolder(folder).per_test_file,
                    after=["save_teachers"],
                    log_file=os.path.join(logs, f"{name}.log"))
            )  # fmt: skip
    return jobs


def student_strategies(args):
    """The distilled students: ``--strategies``, and with ``--unlabelled``
    the self-training one, ``pseudo``."""
    return [*args.strategies, *(["pseudo"] if args.unlabelled else [])]


def pool_folder(data_folder):
    """The mini corpus's pool of unlabelled audio (``--unlabelled``)."""
    return os.path.join(data_folder, "POOL")


def student_seeds(args):
    """The students' seeds: STUDENT_SEED + --seed + i for i < --seeds."""
    return [STUDENT_SEED + args.seed + i for i in range(args.seeds)]


def student_folder(out, strategy, seed):
    """Where a student run writes: one folder per strategy and seed, so that
    no two runs share one and --seeds 3 after --seeds 1 reuses seed 0."""
    return os.path.join(out, "students", strategy, f"seed{seed}")


def check_layout(out):
    """A demo folder from before --seeds (students/<strategy>/ was the run
    folder itself) is not reused: its corpus and layout differ."""
    for strategy in ("baseline", *STRATEGIES):
        old = RunFolder(os.path.join(out, "students", strategy)).hparams_file
        if os.path.isfile(old):
            raise DemoError(
                f"{out} holds a demo made by an older run_demo.py ({old}: one "
                "seed, students/<strategy>/ as the run folder, and another "
                "corpus). Remove that folder or give another --output_folder."
            )


def check_pool_size(corpus, speakers, out):
    """The demo folder's pool must have the speakers asked for: its store
    and students were made on it (another --pool_multiple: another folder)."""
    from tools.mini_timit.pool import POOL_MARKER

    with open(os.path.join(pool_folder(corpus), POOL_MARKER), encoding="utf-8") as f:
        have = json.load(f)["options"]["pool_speakers"]
    if have != speakers:
        raise DemoError(
            f"{pool_folder(corpus)} holds a pool of {have} speakers, this "
            f"--pool_multiple asks for {speakers}; the store and students in "
            f"{out} were made on it. Give another --output_folder (the default "
            "one differs per --pool_multiple)."
        )


def make_corpus(args, say):
    """The mini corpus in TIMIT's layout (made once; same seed, same bytes).

    A corpus already in the output folder is reused only if it was made with
    this preset and seed; one made with others (the ``demo`` preset of an
    older run_demo.py, with 32 test utterances) is an error: the runs next to
    it were trained and tested on it.
    """
    out = os.path.abspath(args.output_folder)
    corpus = os.path.join(out, "TIMIT")
    try:
        existing = existing_corpus(corpus, seed=args.corpus_seed, preset=args.preset)
    except MiniTimitError as err:
        raise DemoError(
            f"{err}.\nThe demo now uses the mini corpus preset {args.preset!r} "
            f"({PRESETS[args.preset]}), and the runs in {out} were made on "
            f"the corpus there: remove {out} or give another --output_folder."
        ) from None
    argv = ["tools/make_mini_timit.py", corpus, "--preset", args.preset]
    argv += ["--seed", str(args.corpus_seed), "--quiet"]
    if args.unlabelled:
        speakers = POOL_SPEAKERS[args.preset] * args.pool_multiple
        argv += ["--pool_speakers", str(speakers)]
        if existing is not None and not os.path.isdir(pool_folder(corpus)):
            existing = None  # the corpus is there, its pool is still to make
        elif existing is not None:
            check_pool_size(corpus, speakers, out)
    if existing is not None:
        say(f"mini corpus: {corpus} (already made)")
        return corpus
    say(f"mini corpus: making it\n           $ {shlex.join(['python', *argv])}")
    t0 = time.time()
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True)
    say(f"mini corpus: done in {time.time() - t0:.0f} s")
    return corpus


def machine_line(args):
    line = f"{os.cpu_count()} CPU cores ({cpu_model()})"
    if args.device.startswith("cuda"):
        import torch

        line += f", GPU {torch.cuda.get_device_name(0)}"
    return line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        # The docstring's paragraph on seeds: why the teachers stay fixed.
        epilog=next(p for p in __doc__.split("\n\n") if p.startswith("Seeds:")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (<3 min)")
    parser.add_argument(
        "--data_folder",
        help="a TIMIT-format corpus (default: the mini corpus, made if absent)",
    )
    parser.add_argument("--output_folder", help="default: results/demo[_quick]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--jobs", type=int, help="runs side by side (CPU default 2)")
    parser.add_argument("--num_teachers", type=int, help="default: 3 (quick: 2)")
    parser.add_argument(
        "--teachers", nargs="+", choices=[f"tea{k}" for k in range(10)],
        help=f"teacher files to use (default: the first K of {TEACHER_ORDER})",
    )  # fmt: skip
    for key in ("teacher_width", "student_width", "teacher_epochs", "student_epochs"):
        parser.add_argument(f"--{key}", type=int, help=f"default: {DEMO[key]}")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="added to every run's seed (teacher K: 1000 + K, students: 2000)",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, default=1,
        help="student seeds: the baseline and every KD student are trained at "
        "seeds 2000 + --seed + i, i < N (default 1). The teachers are trained "
        "once at their own seeds: one store serves all, and the seeds measure "
        "the students' seed-to-seed variance, against which the KD-minus-"
        "baseline difference is tested (seed i vs seed i)",
    )  # fmt: skip
    parser.add_argument(
        "--strategies", nargs="+", choices=STRATEGIES, default=list(DEMO_STRATEGIES),
        help="the distilled students to train, one per strategy (default: "
        "best weighted; average adds about 7 min on 2 CPU cores, see "
        "docs/demo.md#time)",
    )  # fmt: skip
    parser.add_argument(
        "--unlabelled", action="store_true",
        help="also distil on a pool of audio the teachers never trained on "
        "(as much as train; the mini corpus's POOL, or DATA_FOLDER/POOL), and "
        "train a self-training student, pseudo (default output folder: "
        "results/demo_unlabelled)",
    )  # fmt: skip
    parser.add_argument(
        "--pool_multiple", type=int, choices=POOL_MULTIPLES, default=1,
        help="with --unlabelled: the pool is this many times train's audio "
        "(default 1; 4 is the study's 4x pool; default output folder "
        "results/demo_unlabelled_<M>x)",
    )  # fmt: skip
    parser.add_argument("--corpus_seed", type=int, default=1234)
    parser.add_argument(
        "--cost_files", type=int,
        help="test files decoded to time each model (0: no size/speed columns;"
        " default 8, quick 2)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEMO
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.cost_files is None:
        args.cost_files = 2 if args.quick else 8
    if args.output_folder is None:
        args.output_folder = (
            "results/demo"
            + ("_unlabelled" if args.unlabelled else "")
            + (f"_{args.pool_multiple}x" if args.pool_multiple > 1 else "")
            + ("_quick" if args.quick else "")
        )
    if args.jobs is None:
        args.jobs = 1 if args.device.startswith("cuda") else min(2, os.cpu_count())
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more (runs side by side), got {args.jobs}")
    if args.seeds < 1:
        parser.error("--seeds must be 1 or more")
    if args.pool_multiple > 1 and not args.unlabelled:
        parser.error("--pool_multiple needs --unlabelled (the pool's size)")
    if len(set(args.strategies)) != len(args.strategies):
        parser.error(f"--strategies names one twice: {' '.join(args.strategies)}")
    if args.teachers is None and not 1 <= args.num_teachers <= len(TEACHER_ORDER):
        parser.error(f"--num_teachers must be 1 to {len(TEACHER_ORDER)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()

    def say(text):
        print(text, flush=True)

    check_output_folder(args.output_folder)  # a file there: said before any run
    check_layout(os.path.abspath(args.output_folder))
    data_folder = args.data_folder or make_corpus(args, say)
    jobs = build_jobs(args, os.path.abspath(data_folder))
    # One intra-op thread per run on CPU (two runs on two cores measured 2x
    # faster than two threads each fighting for them).
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    say(f"{len(jobs)} runs, {args.jobs} at a time, {threads} torch thread(s) each")
    Scheduler(jobs, args.jobs, env, say).run()

    runs = [read_run(job.folder) for job in jobs if job.name != "save_teachers"]
    columns = ()
    if args.cost_files:
        # Size and speed of every model, measured the same way one after the
        # other here (mtkd_tools.export.model_cost), on the same test files.
        # One seed per model: the architecture, not the seed, sets them.
        first_seeds = [group["runs"][0] for group in group_runs(runs)]
        say(f"size and real-time factor of {len(first_seeds)} models ...")
        files = test_files(runs[0], args.cost_files)
        add_costs(first_seeds, files, args.device, repeats=1 if args.quick else 3)
        columns = COST_COLUMNS
    minutes = (time.time() - t0) / 60
    seeds = student_seeds(args)
    seeds_text = (
        f"seed {seeds[0]}"
        if len(seeds) == 1
        else (f"seeds {seeds[0]}-{seeds[-1]} (teachers: one seed each)")
    )
    preamble = [
        f"`python {shlex.join(['run_demo.py', *(argv or sys.argv[1:])])}` on "
        f"{machine_line(args)}: {minutes:.1f} min this time (runs already done "
        "are not redone). Wall times below are each run's own (epochs and test).",
        f"Data: {data_folder}. Teachers: {', '.join(teacher_names(args))}; "
        f"students: {seeds_text}, width {args.student_width}, alpha "
        f"{KD_SETTINGS['alpha']}, temperature {KD_SETTINGS['temperature']}.",
    ]
    if args.unlabelled:
        preamble.append(
            f"Unlabelled audio: {pool_folder(data_folder)} ({args.pool_multiple}x "
            "train's); every distilled "
            "student trains on train + it (the teachers alone there, "
            "unlabelled_alpha 1); student-pseudo learns the teachers' consensus "
            "on it as a hard label (unlabelled_alpha 0), with the same objective "
            f"on train (alpha {KD_SETTINGS['alpha']}); student-baseline trains "
            f"{matched_baseline_epochs(args)}x the epochs on train alone: every "
            "student takes the same number of optimiser updates."
        )
    if args.quick:
        preamble.insert(0, SMOKE_RUN_NOTE)
    out = os.path.abspath(args.output_folder)
    table = write_results(runs, out, "Demo results", preamble, columns)
    say("\n" + table)
    say(f"Written: {out}/RESULTS.md, results.json, {PLOT_PNG}")


if __name__ == "__main__":
    try:
        main()
    except (RecipeError, subprocess.CalledProcessError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
