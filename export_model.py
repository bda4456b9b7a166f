#!/usr/bin/env python3
"""Export a trained teacher or student for SpeechBrain's inference API.

    python export_model.py --from results/tea0/1000 --to models/tea0

``--from`` is the output folder of a ``train_teacher.py`` or ``train_kd.py``
run; the best valid checkpoint is exported unless ``--checkpoint`` names
another (a ``CKPT+*`` folder or its ``model.ckpt``). The search is the run's
test search (``test_beam_size``, ``decode_ctc_weight``, ``beam_options``);
``--beam_size`` and ``--decode_ctc_weight`` change it. The result loads with

    from speechbrain.inference.ASR import EncoderDecoderASR
    asr = EncoderDecoderASR.from_hparams(source="models/tea0")
    asr.transcribe_file("x.wav")  # -> "sil dh ax ..."

with this recipe's ``mtkd`` package importable (see ``mtkd_tools/export.py``), or
with ``python transcribe.py models/tea0 FILES_OR_FOLDERS``. Exporting the same
checkpoint twice gives the same bytes; the folder appears only when complete.
"""

import argparse
import sys
import time

from mtkd.hparams import run_stage
from mtkd_tools.export import EXPORT_FILES, export_model


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a trained model of this recipe for SpeechBrain's "
        "EncoderDecoderASR (offline, self-contained folder)."
    )
    parser.add_argument(
        "--experiment_folder",
        "--from",
        dest="source",
        required=True,
        metavar="EXPERIMENT_DIR",
        help="output folder of a train_teacher.py / train_kd.py run (--from is "
        "the shorter spelling)",
    )
    parser.add_argument(
        "--output_folder",
        "--to",
        dest="target",
        required=True,
        metavar="MODEL_DIR",
        help="the new model folder (--to is the shorter spelling)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="a CKPT+* folder or its model.ckpt (default: the best valid one)",
    )
    parser.add_argument(
        "--beam_size",
        type=int,
        help="beam size (1: greedy search); default: the run's test_beam_size",
    )
    parser.add_argument(
        "--decode_ctc_weight",
        type=float,
        help="weight of the CTC score in the beam search; default: the run's",
    )
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    start = time.perf_counter()
    experiment = export_model(
        args.source,
        args.target,
        checkpoint=args.checkpoint,
        beam_size=args.beam_size,
        decode_ctc_weight=args.decode_ctc_weight,
    )
    print(
        f"Exported {experiment.checkpoint} to {args.target} "
        f"({', '.join(EXPORT_FILES)}) in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    run_stage(main, sys.argv[1:])
