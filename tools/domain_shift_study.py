#!/usr/bin/env python3
"""Distillation across a domain shift: labels from one synthesiser, unlabelled
audio and test from the other (issue 36).

    python tools/domain_shift_study.py --plan             # what it runs
    python tools/domain_shift_study.py --jobs 2 --seeds 6 # all of it, resumable
    python tools/domain_shift_study.py --labelled flite   # the other direction
    python tools/domain_shift_study.py --summarize        # tables of finished runs
    python tools/domain_shift_study.py --quick            # smoke run (tiny)

The corpus is the mini corpus preset ``demo_core_mixed``: ``demo_core``'s
speakers and sentences, half of every split spoken by eSpeak NG and half by
Flite (``tools/make_mini_timit.py``). With ``--labelled espeak`` (the
default) the teachers and the students get labels only for the eSpeak NG
speakers: train and valid are the eSpeak NG halves of TRAIN and of the dev
speakers; the unlabelled pool is the Flite half of TRAIN (its transcripts
dropped; as many speakers as the labelled train) and the test set is the
Flite half of the core test. No label of the new domain is used anywhere
(valid, where settings are chosen, stays in the labelled family). A second
test manifest, the labelled family's half of the core test, tells what each
model keeps of its own domain: every finished run is decoded on it in a copy
of its folder (its command with ``--test_annotation`` changed, as
``tools/valid_decode.py`` does for valid).

Rows (``tools/kd_study.py``'s configurations of the same names, run with its
settings and run_demo.py's: CPU-sized teachers tea0, tea3, tea5 and the
149 k student, seeds 2000, 2001, ...):

- ``baseline-matched``: the labelled data alone, for as many optimiser
  updates as the students on train + the pool (twice the epochs: the pool is
  as large as train);
- ``pseudo-matched``: self-training, the teachers' consensus on the pool as a
  hard label (``--unlabelled POOL --strategy weighted --alpha 0.5
  --unlabelled_alpha 0``);
- ``weighted-1x``: distilled on the pool (``--alpha 0.5 --unlabelled_alpha
  1``), the earlier issues' chosen configuration;
- ``oracle-1x``: train + the pool with its true phones (the ceiling).

The summary reports test PER on both families, each row against the others
(paired bootstrap over speakers and seeds, seed i with seed i), and the
teachers' consensus PER on the pool against its true phones (and on valid,
their own family; ``tools/consensus_quality.py``): if the teachers are too
poor on the new domain for their targets to help, that figure says so.

Each run is a subprocess with the command a user would type, logged under
``<output_folder>/logs``; finished runs are skipped and an interrupted one
resumes, so the command can be stopped and run again at any time.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import run_demo  # noqa: E402
from mtkd.runs import RunFolder  # noqa: E402
from mtkd.store.format import unlabelled_part_path  # noqa: E402
from mtkd_tools.results import (  # noqa: E402
    atomic_write,
    group_runs,
    mean_std,
    read_run,
    runs_table,
)
from mtkd_tools.significance import (  # noqa: E402
    UTTERANCES_JSON,
    run_edit_counts,
    write_utterances,
)
from tools import kd_study  # noqa: E402
from tools.kd_study import (  # noqa: E402
    KD_SETTINGS,
    SHARED_SETTINGS,
    STUDENT_SEED,
    STUDENT_SETTINGS,
    STUDENT_WIDTH,
    TEACHER_WIDTH,
    TEACHERS_3,
    Job,
    Scheduler,
    flags,
    matched_epochs,
    student_sizes,
    teacher_file_values,
    teacher_sizes,
    write_teacher_list,
)
from tools.mini_timit import MARKER_FILENAME, SYNTHESISERS, VOICE_FAMILIES  # noqa: E402

CORPUS_PRESET = "demo_core_mixed"
QUICK_PRESET = "tiny_mixed"
# The rows: kd_study's configurations (their overrides are taken from there).
ROWS = ("baseline-matched", "pseudo-matched", "weighted-1x", "oracle-1x")
BASELINE = "baseline-matched"
# Each row against these (on both test sets).
COMPARISONS = (
    ("pseudo-matched", BASELINE),
    ("weighted-1x", BASELINE),
    ("weighted-1x", "pseudo-matched"),
    ("oracle-1x", BASELINE),
)
POOL_SIZE = "1x"  # the pool is as large as train
STORE = "store-t3-T1"
TEMPERATURE = 1.0
MANIFESTS = "manifests"


class DomainShiftError(run_demo.RecipeError):
    """The study cannot go on: a corpus without both families, bad options."""


def other_family(family):
    return next(f for f in VOICE_FAMILIES if f != family)


def manifest_paths(out, labelled):
    """{role: path} of the study's manifests under ``out/manifests``:
    ``train``, ``valid`` (labelled family), ``test`` (the other family: the
    runs' test), ``home_test`` (the labelled family's test), ``pool`` (the
    other family's training speakers without phones) and ``oracle`` (train +
    the pool with its true phones)."""
    folder = os.path.join(out, MANIFESTS)
    new = other_family(labelled)
    return {
        "train": os.path.join(folder, f"train-{labelled}.json"),
        "valid": os.path.join(folder, f"valid-{labelled}.json"),
        "test": os.path.join(folder, f"test-{new}.json"),
        "home_test": os.path.join(folder, f"test-{labelled}.json"),
        "pool": os.path.join(folder, f"pool-{new}.json"),
        "oracle": os.path.join(folder, "oracle.json"),
    }


def speaker_families(corpus):
    """{speaker ID (upper case): its synthesiser} from the corpus's
    MINI_TIMIT.json (speakers of a corpus made before Flite: espeak)."""
    path = os.path.join(corpus, MARKER_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)["summary"]
    except (OSError, ValueError, KeyError):
        raise DomainShiftError(
            f"{path}: missing or unreadable. Give a mini corpus made by "
            f"tools/make_mini_timit.py --preset {CORPUS_PRESET}."
        ) from None
    return {
        entry["id"].upper(): entry.get("synthesiser", "espeak")
        for folder in summary["speakers"].values()
        for entry in folder
    }


def make_manifests(out, corpus, labelled, say=print):
    """Writes the study's manifests (``manifest_paths``) from the corpus;
    made once. Every split must hold speakers of both families."""
    from timit_prepare import prepare_timit
    from unlabelled_prepare import prepare_unlabelled

    paths = manifest_paths(out, labelled)
    if all(os.path.isfile(p) for p in paths.values()):
        return paths
    families = speaker_families(corpus)
    folder = os.path.dirname(paths["train"])
    os.makedirs(folder, exist_ok=True)
    full = {split: os.path.join(folder, f"all-{split}.json") for split in
            ("train", "valid", "test")}  # fmt: skip
    prepare_timit(
        corpus, save_json_train=full["train"], save_json_valid=full["valid"],
        save_json_test=full["test"],
    )  # fmt: skip
    data = {}
    for split, path in full.items():
        with open(path, encoding="utf-8") as f:
            data[split] = json.load(f)
    new = other_family(labelled)

    def of(split, family):
        chosen = {
            utt: entry
            for utt, entry in data[split].items()
            if families.get(entry["spk_id"].upper(), "espeak") == family
        }
        if not chosen:
            raise DomainShiftError(
                f"{corpus}: no {SYNTHESISERS[family]} speaker in its {split} "
                f"split, so there is no {family} {split} set. Make the corpus "
                f"with tools/make_mini_timit.py --preset {CORPUS_PRESET} (eSpeak "
                "NG and Flite speakers in every split)."
            )
        return chosen

    pool_labelled = of("train", new)
    parts = {
        "train": of("train", labelled),
        "valid": of("valid", labelled),
        "test": of("test", new),
        "home_test": of("test", labelled),
    }
    parts["oracle"] = {**parts["train"], **pool_labelled}
    for role, entries in parts.items():
        atomic_write(paths[role], json.dumps(entries, indent=1) + "\n")
    # The pool: its transcripts dropped, checked against the labelled sets.
    with_phones = os.path.join(folder, f"pool-{new}-with-phones.json")
    atomic_write(with_phones, json.dumps(pool_labelled, indent=1) + "\n")
    prepare_unlabelled(
        with_phones, paths["pool"], corpus,
        [paths["train"], paths["valid"], paths["test"]],
    )  # fmt: skip
    say(
        f"manifests: {len(parts['train'])} labelled training utterances "
        f"({labelled}), {len(pool_labelled)} unlabelled ({new}), valid "
        f"{len(parts['valid'])} ({labelled}), test {len(parts['test'])} ({new}) "
        f"and {len(parts['home_test'])} ({labelled}), in {folder}"
    )
    return paths


def row_overrides(name):
    """The train_kd.py keys of a row (kd_study's configuration), or None for
    a student without distillation; ``oracle``/``updates_of`` kept."""
    _, _, _, _, overrides = kd_study.CONFIGS[name]
    return overrides


def distils(overrides):
    """Is a row distilled (train_kd.py), or a student on labels alone
    (train_teacher.py: the baselines and the oracle)?"""
    plain = {"oracle", "updates_of"}
    return isinstance(overrides, dict) and not plain & set(overrides)


def build_jobs(args, corpus):
    """Teachers, the store and its unlabelled part, the consensus check, then
    the rows seed by seed; each finished run is decoded again on the labelled
    family's test in a copy of its folder."""
    out = os.path.abspath(args.output_folder)
    logs = os.path.join(out, "logs")
    paths = manifest_paths(out, args.labelled)
    common = ["--data_folder", corpus, "--device", args.device, "--noprogressbar"]
    common += ["--skip_prep", "True", "--train_annotation", paths["train"]]
    common += ["--valid_annotation", paths["valid"]]
    common += ["--test_annotation", paths["test"]]
    shared = {**SHARED_SETTINGS, **args.quick_settings}
    jobs = []

    def job(name, argv, folder, done_file, after=()):
        log_file = os.path.join(logs, f"{name.replace('/', '-')}.log")
        new = Job(name, argv, folder, done_file, after, log_file=log_file)
        jobs.append(new)
        return new

    def home_test(run):
        """``run`` decoded on the labelled family's test, in a copy."""
        copy = os.path.join(
            out, f"test-{args.labelled}", os.path.relpath(run.folder, out)
        )
        argv = list(run.argv)
        argv[argv.index("--output_folder") + 1] = copy
        argv[argv.index("--test_annotation") + 1] = paths["home_test"]
        decode = job(f"{run.name}@test-{args.labelled}", argv, copy,
                     RunFolder(copy).per_test_file, after=[run.name])  # fmt: skip
        decode.prepare = lambda: copy_run(run.folder, copy, decode)
        return decode

    teacher_folders = []
    for name in TEACHERS_3:
        folder = os.path.join(out, "teachers", name)
        settings = {
            **shared,
            **teacher_sizes(name, args.teacher_width),
            "number_of_epochs": args.teacher_epochs,
            "seed": teacher_file_values(name)["seed"],
        }
        argv = ["train_teacher.py", f"hparams/teachers/{name}.yaml", *common]
        argv += ["--output_folder", folder, *flags(settings)]
        job(name, argv, folder, RunFolder(folder).per_test_file)
        teacher_folders.append(folder)
    for teacher in list(jobs):
        home_test(teacher)

    folder = os.path.join(out, "stores", STORE)
    store = os.path.join(folder, "store")
    list_file = os.path.join(folder, "teachers.txt")
    argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
    argv += ["--tea_models_dir", list_file, "--output_folder", folder]
    argv += ["--temperature", str(TEMPERATURE)]
    save = job(STORE, argv, folder, os.path.join(folder, "store_summary.json"),
               after=TEACHERS_3)  # fmt: skip
    save.prepare = lambda: write_teacher_list(
        list_file, teacher_folders, "tools/domain_shift_study.py"
    )
    part_name = f"{STORE}-unlabelled"
    folder = os.path.join(out, "stores", part_name)
    argv = ["save_teachers.py", "hparams/save_teachers.yaml", *common]
    argv += ["--tea_models_dir", list_file, "--output_folder", folder]
    argv += ["--store_folder", store, "--temperature", str(TEMPERATURE)]
    argv += ["--unlabelled", paths["pool"]]
    done = unlabelled_part_path(store, len(TEACHERS_3))
    job(part_name, argv, folder, done, after=[STORE])
    folder = os.path.join(out, "consensus")
    argv = ["tools/consensus_quality.py", "--store", store, "--valid", paths["valid"]]
    argv += ["--oracle", paths["oracle"], "--out", consensus_path(out)]
    job("consensus", argv, folder, consensus_path(out), after=[part_name])

    for seed_index in range(args.seeds):
        for name in args.rows:
            overrides = row_overrides(name)
            student = {
                **shared,
                **STUDENT_SETTINGS,
                **student_sizes(args.student_width),
                "number_of_epochs": args.student_epochs,
                "seed": STUDENT_SEED + seed_index,
            }
            folder = os.path.join(out, "students", name, f"seed{seed_index}")
            run_name = f"{name}/seed{seed_index}"
            done = RunFolder(folder).per_test_file
            if not distils(overrides):
                overrides = overrides or {}
                if overrides.get("updates_of"):
                    student["number_of_epochs"] = matched_epochs(
                        args.student_epochs, overrides["updates_of"]
                    )
                argv = ["train_teacher.py", "hparams/teacher.yaml", *common]
                if overrides.get("oracle"):
                    argv[argv.index("--train_annotation") + 1] = paths["oracle"]
                argv += ["--output_folder", folder]
                argv += ["--teacher_name", f"student-{name}"]
                run = job(run_name, argv + flags(student), folder, done)
            else:
                settings = {**student, **KD_SETTINGS, "temperature": TEMPERATURE}
                settings.update(
                    {k: v for k, v in overrides.items() if k != "unlabelled"}
                )
                settings["unlabelled"] = paths["pool"]
                argv = ["train_kd.py", "hparams/train_kd.yaml", *common]
                argv += ["--output_folder", folder, "--tea_infer_dir", store]
                run = job(run_name, argv + flags(settings), folder, done,
                          after=[STORE, part_name])  # fmt: skip
            home_test(run)
    return jobs


def consensus_path(out):
    return os.path.join(out, "consensus", "consensus_quality.json")


def copy_run(source, copy, job):
    """Copies a finished run's folder to ``copy`` for a second test (its
    per_test.txt and recorded command left behind); a finished copy stays."""
    if os.path.isfile(RunFolder(copy).per_test_file):
        return
    partial = copy + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(
        source, partial,
        ignore=shutil.ignore_patterns("per_test.txt", "demo_command.txt"),
    )  # fmt: skip
    shutil.rmtree(copy, ignore_errors=True)
    os.rename(partial, copy)
    log = RunFolder(copy).train_log
    if os.path.isfile(log):  # its epochs are not news: progress starts after them
        with open(log) as f:
            job.log_lines_seen = len(f.read().splitlines())


def make_corpus(args, say):
    """The mixed corpus (made once; the same options give the same bytes).
    An existing corpus is taken as it is: ``speaker_families`` checks that it
    has both families, and says which preset to make if not."""
    corpus = os.path.join(os.path.abspath(args.output_folder), "TIMIT")
    if os.path.isfile(os.path.join(corpus, MARKER_FILENAME)):
        return corpus
    return kd_study.make_corpus(args, say, args.preset)


# ---------------------------------------------------------------------------
# Summary


def _finished_runs(jobs, home):
    """The finished runs (teachers and rows) on the new family's test, or
    (``home``) their copies decoded on the labelled family's."""
    runs = []
    for job in jobs:
        is_copy = "@test-" in job.name
        if is_copy != home or not job.is_done():
            continue
        if job.name.startswith("store-") or job.name == "consensus":
            continue
        run = read_run(job.folder)
        run["name"] = job.name.split("@")[0].split("/")[0]
        runs.append(run)
    return runs


def _compare_all(by_name, counts):
    out = []
    for name, baseline in COMPARISONS:
        if name in by_name and baseline in by_name:
            common = [
                s for s in by_name[name]["seeds"] if s in by_name[baseline]["seeds"]
            ]
            if not common:
                continue

            def of(group, seeds=common):
                return [r for r in group["runs"] if r["seed"] in seeds]

            out.append(
                kd_study.comparison(
                    name, baseline, of(by_name[baseline]), of(by_name[name]), counts
                )
            )
    return out


def _gap_closed(by_name):
    """Sentence: the share of the baseline-oracle gap each row on the pool
    closes (mean test PER over the seeds the three share), or None."""
    base, oracle = by_name.get(BASELINE), by_name.get("oracle-1x")
    if not (base and oracle):
        return None
    parts = []
    for name in ("pseudo-matched", "weighted-1x"):
        group = by_name.get(name)
        if not group:
            continue
        seeds = set(base["seeds"]) & set(oracle["seeds"]) & set(group["seeds"])
        if not seeds:
            continue

        def mean(g, seeds=seeds):
            values = [r["test_PER"] for r in g["runs"] if r["seed"] in seeds]
            return sum(values) / len(values)

        b, o, g = mean(base), mean(oracle), mean(group)
        share = f"{100 * (b - g) / (b - o):.0f} %" if b > o else "- (no gap)"
        parts.append(f"{name} {share} ({b:.2f} -> {g:.2f}; oracle {o:.2f})")
    if not parts:
        return None
    return "Share of the gap between the baseline and the oracle closed: " + (
        "; ".join(parts) + "."
    )


def _table(groups_new, groups_home, new, labelled):
    home = {g["name"]: g for g in groups_home}
    head = ["model", "seeds", "parameters", f"valid PER ({labelled})"]
    head += [f"test PER, {SYNTHESISERS[new]} (new domain)"]
    head += [f"test PER, {SYNTHESISERS[labelled]} (labelled domain)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(stats):
        if stats is None or stats["mean"] is None:
            return "-"
        if stats["std"] is None:
            return f"{stats['mean']:.2f}"
        return f"{stats['mean']:.2f} ± {stats['std']:.2f}"

    for group in groups_new:
        other = home.get(group["name"])
        seeds = group["seeds"]
        seeds_text = (
            ", ".join(str(s) for s in seeds)
            if len(seeds) < 3
            else (f"{seeds[0]}-{seeds[-1]}")
        )
        lines.append(
            "| " + " | ".join([
                group["name"], seeds_text, f"{group['parameters'] / 1e3:.0f} k",
                cell(group["valid_PER"]), cell(group["test_PER"]),
                cell(other and mean_std([r["test_PER"] for r in other["runs"]])),
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def _consensus_sentence(out, labelled, new):
    path = consensus_path(out)
    if not os.path.isfile(path):
        return None, None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    pool = result.get("unlabelled")
    valid = result["valid"]
    text = (
        f"The teachers' consensus (the medoid of their greedy CTC hypotheses, the "
        f"hard label of self-training) against the true phones: "
        f"{valid['consensus']:.2f} % PER on valid ({SYNTHESISERS[labelled]}, "
        "their own domain)"
    )
    if pool:
        teachers = ", ".join(f"{p:.2f}" for p in pool["teachers"])
        text += (
            f", {pool['consensus']:.2f} % on the pool ({SYNTHESISERS[new]}; "
            f"each teacher's greedy CTC: {teachers} %)"
        )
    return text + ".", result


def summarize(args, jobs, say):
    """RESULTS.md, results.json and the per-utterance counts of both test
    sets, in the output folder and in ``--docs_folder``."""
    out = os.path.abspath(args.output_folder)
    new = other_family(args.labelled)
    sections, payload = [], {"labelled": args.labelled, "new": new}
    tests = (("test", new, False), ("home_test", args.labelled, True))
    all_groups = {}
    utterance_files = {}
    for key, family, home in tests:
        runs = _finished_runs(jobs, home)
        groups = group_runs(runs)
        by_name = {g["name"]: g for g in groups}
        counts = {kd_study.run_key(r): run_edit_counts(r["folder"]) for r in runs}
        comparisons = _compare_all(by_name, counts)
        all_groups[key] = groups
        utterance_files[key] = counts
        sentences = [c["sentence"] for c in comparisons]
        if not home:
            gap = _gap_closed(by_name)
            sentences += [gap] if gap else []
        sections.append((family, home, sentences, runs))
        payload[key] = {
            "family": family,
            "runs": runs,
            "models": [{k: v for k, v in g.items() if k != "runs"} for g in groups],
            "comparisons": comparisons,
        }
    consensus, payload["consensus"] = _consensus_sentence(out, args.labelled, new)
    done, total = sum(job.is_done() for job in jobs), len(jobs)
    table = _table(all_groups["test"], all_groups["home_test"], new, args.labelled)
    lines = [
        "# Distillation across a domain shift: results",
        "",
        f"`{study_command(args)}` ({done} of {total} runs finished). Labelled: "
        f"{SYNTHESISERS[args.labelled]} speakers (train, valid); the unlabelled "
        f"pool and the test set: {SYNTHESISERS[new]} speakers. Seeds per row: "
        f"{args.seeds}; teacher epochs {args.teacher_epochs}, student epochs "
        f"{args.student_epochs}.",
        "",
        table,
        "",
    ]
    if args.quick:
        lines[2:2] = [run_demo.SMOKE_RUN_NOTE, ""]
    if consensus:
        lines += [f"- {consensus}"]
    for family, home, sentences, _ in sections:
        where = "labelled domain" if home else "new domain"
        lines += [f"- On the {SYNTHESISERS[family]} test ({where}):"]
        lines += [f"  - {s}" for s in sentences] or ["  - no comparison yet"]
    lines += ["", "Every run, on the new domain's test:", ""]
    lines += [runs_table(sections[0][3]), ""]
    for folder in (out, args.docs_folder):
        if not folder:
            continue
        os.makedirs(folder, exist_ok=True)
        atomic_write(os.path.join(folder, "RESULTS.md"), "\n".join(lines))
        atomic_write(
            os.path.join(folder, "results.json"),
            json.dumps(payload, indent=1, default=str) + "\n",
        )
        write_utterances(os.path.join(folder, UTTERANCES_JSON), utterance_files["test"])
        write_utterances(
            os.path.join(folder, f"utterances-test-{args.labelled}.json"),
            utterance_files["home_test"],
        )
    say("\n".join(lines[lines.index(table) :]))


def study_command(args):
    """The command that makes these runs (options that differ from the
    defaults, ``--output_folder``, ``--jobs`` and ``--docs_folder`` aside)."""
    argv = ["python", "tools/domain_shift_study.py"]
    defaults = vars(parse_args([]))
    for key in ("quick", "labelled", "rows", "seeds", "teacher_epochs",
                "student_epochs", "corpus_seed"):  # fmt: skip
        value = getattr(args, key)
        if key == "quick":
            argv += ["--quick"] if value else []
            continue
        if value == defaults[key] or (args.quick and key.endswith("epochs")):
            continue
        words = value if isinstance(value, list) else [str(value)]
        argv += [f"--{key}", *words]
    return shlex.join(argv)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--output_folder", help="default: results/domain_shift_<labelled>[_quick]"
    )
    parser.add_argument(
        "--labelled", default="espeak", choices=VOICE_FAMILIES,
        help="the voice family with labels (default espeak: the pool and the "
        "test are Flite's)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=6, help="student seeds (6)")
    parser.add_argument(
        "--rows", nargs="+", choices=ROWS, default=list(ROWS),
        help=f"the rows to run (default: all of {' '.join(ROWS)})",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teacher_epochs", type=int, default=None,
                        help="default 15 (quick: 1)")  # fmt: skip
    parser.add_argument("--student_epochs", type=int, default=None,
                        help="default 15 (quick: 1); the baseline trains twice "
                        "as many")  # fmt: skip
    parser.add_argument("--corpus_seed", type=int, default=1234)
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: the tiny_mixed corpus, tiny models, one epoch (its "
        "figures are no result)",
    )  # fmt: skip
    parser.add_argument(
        "--docs_folder", default=None,
        help="also write the tables here (default: docs/domain_shift/<labelled>; "
        "'' for nowhere; --quick: nowhere)",
    )  # fmt: skip
    parser.add_argument("--plan", action="store_true", help="list runs and exit")
    parser.add_argument(
        "--summarize", action="store_true", help="only write the tables"
    )
    args = parser.parse_args(argv)
    size = run_demo.QUICK if args.quick else run_demo.DEMO
    args.preset = QUICK_PRESET if args.quick else CORPUS_PRESET
    args.teacher_width = size["teacher_width"] if args.quick else TEACHER_WIDTH
    args.student_width = size["student_width"] if args.quick else STUDENT_WIDTH
    args.quick_settings = dict(run_demo.QUICK_SETTINGS) if args.quick else {}
    for key in ("teacher_epochs", "student_epochs"):
        if getattr(args, key) is None:
            setattr(args, key, size[key])
    if args.output_folder is None:
        quick = "_quick" if args.quick else ""
        args.output_folder = f"results/domain_shift_{args.labelled}{quick}"
    if args.docs_folder is None:
        args.docs_folder = (
            ""
            if args.quick
            else os.path.join(REPO, "docs", "domain_shift", args.labelled)
        )
    if args.seeds < 1:
        parser.error("--seeds must be 1 or more")
    return args


def main(argv=None):
    args = parse_args(argv)

    def say(text):
        print(text, flush=True)

    out = os.path.abspath(args.output_folder)
    corpus = os.path.join(out, "TIMIT")
    if not (args.plan or args.summarize):
        corpus = make_corpus(args, say)
        make_manifests(out, corpus, args.labelled, say)
    jobs = build_jobs(args, corpus)
    if args.plan:
        for job in jobs:
            state = "done" if job.is_done() else "to run"
            say(f"{state:7s} {job.name}: $ {job.command}")
        return
    if not args.summarize:
        # One share of the cores per run, unless OMP_NUM_THREADS says otherwise
        # (a machine whose cores are busy with something else).
        threads = os.environ.get("OMP_NUM_THREADS", "")
        threads = (
            int(threads)
            if threads.isdigit() and int(threads) > 0
            else max(1, (os.cpu_count() or 1) // args.jobs)
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.time()
        say(f"{len(jobs)} runs, {args.jobs} at a time, {threads} thread(s) each")
        Scheduler(jobs, args.jobs, env, say).run()
        say(f"all runs done in {(time.time() - t0) / 60:.1f} min")
    summarize(args, jobs, say)


if __name__ == "__main__":
    try:
        main()
    except (run_demo.RecipeError, subprocess.CalledProcessError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
