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

It ends with the model's test PER and the commands to go on. A run that was
stopped is continued by the same command (the training resumes from its
checkpoint; finished steps are skipped).
"""

import argparse
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
    settings = {
        **SHARED_SETTINGS,
        **STUDENT_SETTINGS,
        **student_sizes(WIDTH),
        "number_of_epochs": args.epochs,
    }
    if not os.path.isfile(os.path.join(model_run, "per_test.txt")):
        run(
            ["train_teacher.py", "hparams/teachers/tea0.yaml", "--data_folder", data,
             "--output_folder", model_run, "--device", args.device,
             "--noprogressbar", *flags(settings)],
            say,
        )  # fmt: skip
    exported = os.path.join(out, "exported")
    if not os.path.isfile(os.path.join(exported, "hyperparams.yaml")):
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
    say(
        f"test PER {pers['PER']:.2f} % (attention beam search), test CTC PER "
        f"{pers['CTC_PER']:.2f} % (greedy CTC); {minutes:.1f} min in all"
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
