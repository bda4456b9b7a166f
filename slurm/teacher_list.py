#!/usr/bin/env python3
"""Writes the teacher list file of stage 2 from the teachers' output folders.

    python slurm/teacher_list.py LIST_FILE RUN_FOLDER [RUN_FOLDER ...]

Line K of LIST_FILE is the best checkpoint's ``model.ckpt`` of the K-th run
folder (the ``--output_folder`` of train_teacher.py). The file is replaced
atomically, so array tasks may all write it at once.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mtkd.hparams import run_stage  # noqa: E402
from mtkd.teachers import write_teacher_list  # noqa: E402


def main(argv):
    if len(argv) < 2 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(2)
    lines = write_teacher_list(argv[0], argv[1:])
    print(f"{argv[0]}: {len(lines)} teachers")


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
