#!/usr/bin/env python3
"""A first model worth transcribing with, in about 5 minutes on 2 CPU cores.

    python tools/first_model.py                      # results/first_model
    python tools/first_model.py --epochs 30          # longer, better

Four commands, each printed before it runs, as you would type them:

1. the demo's mini corpus (``tools/make_mini_timit.py``, preset ``demo``;
   skipped if it is there);
2. one recogniser (``train_teacher.py``, tea0's architecture at the demo's
   student width and settings, ``--epochs`` epochs);
3. its export for SpeechBrain's ``EncoderDecoderASR`` (``export_model.py``);
4. a transcription of one test utterance (``transcribe.py``), printed next
   to its reference phones.

It ends with the model's test PER (and the epoch of the checkpoint it
scores, the best on valid) and the commands to go on. A run that was
stopped is continued by the same command (the training resumes from its
checkpoint; finished steps are skipped). A larger ``--epochs`` on a finished
folder trains the same model on to that many epochs, then tests and exports
it again; a smaller one is refused (training cannot be undone).
"""

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mtkd.runs import read_per_summary  # noqa: E402
from run_demo import (  # noqa: E402
    SHARED_SETTINGS,
    STUDENT_SETTINGS,
    flags,
    student_sizes,
)

WIDTH = 64  # the demo's student (149 k parameters)
EPOCHS = 20


def trained_epochs(model_run):
    """How many epochs the training run in ``model_run`` has finished: the
    highest ``epoch`` of its end-of-epoch checkpoints (``CKPT.yaml``, read
    as text to keep this script light); 0 when it has none."""
    done = 0
    for meta in glob.glob(os.path.join(model_run, "save", "CKPT+*", "CKPT.yaml")):
        with open(meta, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "epoch" and value.strip().isdigit():
                    done = max(done, int(value))
    return done


def tested_epoch(model_run):
    """The epoch of the checkpoint the run's test report scores (the best on
    valid, which may be older than the last): the train log's last
    ``Epoch loaded: N``; None when there is none."""
    try:
        with open(os.path.join(model_run, "train_log.txt"), encoding="utf-8") as f:
            loaded = [line for line in f if line.startswith("Epoch loaded: ")]
    except OSError:
        return None
    return loaded[-1].split(",")[0].split(": ")[1] if loaded else None


def run(argv, say):
    """Runs ``python ARGV`` from the recipe folder, printing the command."""
    say(f"$ {shlex.join(['python', *argv])}")
    subprocess.run([sys.executable, *argv], cwd=REPO, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output_folder", default="results/first_model")
    parser.add_argument("--data_folder", help="default: data/mini_timit_demo (made)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"default {EPOCHS}")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output_folder)
    data = os.path.abspath(
        args.data_folder or os.path.join(REPO, "data/mini_timit_demo")
    )

    def say(text):
        print(text, flush=True)

    started = time.time()
    if not os.path.isfile(os.path.join(data, "MINI_TIMIT.json")):
        run(["tools/make_mini_timit.py", data, "--preset", "demo", "--quiet"], say)
    model_run = os.path.join(out, "model")
    done = trained_epochs(model_run)
    if done > args.epochs:
        print(
            f"ERROR: {model_run} holds a model already trained for {done} "
            f"epochs, more than --epochs {args.epochs}, and training cannot be "
            f"undone. Run with --epochs {done} (or more, to train it on) to use "
            "it, or give another --output_folder (or delete this one) for a "
            f"{args.epochs}-epoch model.",
            file=sys.stderr,
        )
        return 2
    settings = {
        **SHARED_SETTINGS,
        **STUDENT_SETTINGS,
        **student_sizes(WIDTH),
        "number_of_epochs": args.epochs,
    }
    per_test = os.path.join(model_run, "per_test.txt")
    if done < args.epochs or not os.path.isfile(per_test):
        if done:
            say(
                f"{model_run} has finished {done} of {args.epochs} epochs: "
                "training goes on from its last checkpoint."
            )
        run(
            ["train_teacher.py", "hparams/teachers/tea0.yaml", "--data_folder", data,
             "--output_folder", model_run, "--device", args.device,
             "--noprogressbar", *flags(settings)],
            say,
        )  # fmt: skip
    exported = os.path.join(out, "exported")
    exported_file = os.path.join(exported, "hyperparams.yaml")
    # An export older than the test report is of a model trained on since.
    stale = not os.path.isfile(exported_file) or (
        os.path.getmtime(exported_file) < os.path.getmtime(per_test)
    )
    if stale:
        run(
            ["export_model.py", "--experiment_folder", model_run,
             "--output_folder", exported],
            say,
        )  # fmt: skip
    with open(os.path.join(model_run, "test.json"), encoding="utf-8") as f:
        utt_id, entry = sorted(json.load(f).items())[0]
    wav = entry["wav"].replace("{data_root}", data)
    run(["transcribe.py", exported, wav], say)
    pers = read_per_summary(os.path.join(model_run, "per_test.txt"))
    minutes = (time.time() - started) / 60
    say(f"reference ({utt_id}): {entry['phn']}")
    best = tested_epoch(model_run)
    best = f", the best on valid: epoch {best}" if best else ""
    say(
        f"test PER {pers['PER']:.2f} % (attention beam search), test CTC PER "
        f"{pers['CTC_PER']:.2f} % (greedy CTC); {args.epochs} epochs trained"
        f"{best}; {minutes:.1f} min in all"
    )
    say(
        "Next: transcribe your own recordings (any sample rate, resampled; "
        "several channels averaged) with\n"
        f"  python transcribe.py {shlex.quote(exported)} FILE_OR_FOLDER\n"
        "(files of one folder are decoded in padded batches, which can change a "
        "phone now and then against the file decoded alone; --batch_size 1 "
        "decodes each file alone), and the whole recipe (teachers, store, "
        "distilled students) with python run_demo.py."
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as err:
        print(f"ERROR: a step failed (exit status {err.returncode}); its "
              "messages are above.", file=sys.stderr)  # fmt: skip
        sys.exit(2)
