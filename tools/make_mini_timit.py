"""Makes a mini corpus in TIMIT's exact layout from eSpeak NG or Flite speech.

The corpus stands in for the licensed TIMIT (LDC93S1) in the tests and the demo;
``timit_prepare.py`` prepares it unchanged. See ``tools/mini_timit/``.

Usage (from the repo root)::

    python tools/make_mini_timit.py data/mini_timit                 # demo preset
    python tools/make_mini_timit.py /tmp/mini --preset tiny --seed 7
    python tools/make_mini_timit.py data/mini --train_speakers 96   # override
    python tools/make_mini_timit.py data/mini_timit --preset demo_core \
        --pool_speakers 96      # + POOL/: unlabelled audio, twice the training's
    python tools/make_mini_timit.py data/mini_flite --preset demo_core \
        --synthesiser flite     # every speaker Flite's (apt-get install flite)
    python tools/make_mini_timit.py data/mini_mixed --preset demo_core_mixed
                                # half the speakers of every split each

--synthesiser: espeak (eSpeak NG, the default), flite (Flite: CMU's voices awb,
kal16, rms, slt; the Debian package flite) or both. A _mixed preset is both.

Running it again with the same options on a finished corpus does nothing; with
other options it stops and asks you to delete the folder or pick another one.
"""

import argparse
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tools.mini_timit import PRESETS, MiniTimitError, make_mini_timit  # noqa: E402
from tools.mini_timit.corpus import SYNTHESISERS  # noqa: E402
from tools.mini_timit.pool import make_mini_pool  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", help="corpus folder to create (holds TRAIN, TEST)")
    parser.add_argument("--seed", type=int, default=1234, help="default: 1234")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="demo",
        help="speaker counts: "
        + "; ".join(
            f"{name}: {p['train_speakers']} train, {p['dev_speakers']} dev, "
            f"{p['test_speakers']} test"
            + (" speakers, both synthesisers" if p.get("synthesiser") else "")
            for name, p in sorted(PRESETS.items())
        )
        + " (default: demo)",
    )
    parser.add_argument("--train_speakers", type=int, default=None)
    parser.add_argument("--dev_speakers", type=int, default=None)
    parser.add_argument("--test_speakers", type=int, default=None)
    parser.add_argument("--sx_per_speaker", type=int, default=5, help="default: 5")
    parser.add_argument("--si_per_speaker", type=int, default=3, help="default: 3")
    parser.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="parallel synthesis processes (default: CPU count, at most 8); "
        "does not change the corpus",
    )
    parser.add_argument(
        "--pool_speakers", type=int, default=0,
        help="also write OUT/POOL: this many new speakers reading new sentences, "
        "as audio for distillation without transcripts (unlabelled_prepare.py); "
        "the corpus itself is unchanged (default: 0, no pool)",
    )  # fmt: skip
    parser.add_argument(
        "--pool_per_speaker", type=int, default=8,
        help="sentences per pool speaker (default: 8)",
    )  # fmt: skip
    parser.add_argument(
        "--synthesiser", metavar="{espeak,flite,both}", default=None,
        help="who speaks: espeak (eSpeak NG), flite (Flite, the Debian package "
        "flite) or both (half the speakers of every split each); default: the "
        "preset's (both for a _mixed preset), else espeak",
    )  # fmt: skip
    parser.add_argument(
        "--flite_voices", nargs="+", metavar="VOICE", default=None,
        help="the Flite voices speakers are given (default: all of awb kal16 "
        "rms slt; slt is the female one)",
    )  # fmt: skip
    parser.add_argument(
        "--quiet", action="store_true", help="no per-speaker progress log"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        summary = make_mini_timit(
            args.out_dir,
            seed=args.seed,
            preset=args.preset,
            train_speakers=args.train_speakers,
            dev_speakers=args.dev_speakers,
            test_speakers=args.test_speakers,
            sx_per_speaker=args.sx_per_speaker,
            si_per_speaker=args.si_per_speaker,
            num_workers=args.num_workers,
            synthesiser=args.synthesiser,
            flite_voices=args.flite_voices,
        )
        pool = None
        if args.pool_speakers:
            pool = make_mini_pool(
                args.out_dir, args.pool_speakers, args.pool_per_speaker,
                args.num_workers,
            )  # fmt: skip
    except MiniTimitError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    for name, folder in summary["folders"].items():
        print(
            f"{name}: {folder['speakers']} speakers, {folder['utterances']} "
            f"utterances, {folder['seconds'] / 60:.1f} min"
        )
    splits = summary["splits"]
    print(
        "usable (SA1/SA2 excluded): "
        + ", ".join(
            f"{role} {d['utterances']} ({d['speakers']} speakers)"
            for role, d in splits.items()
        )
    )
    voices = summary.get("synthesisers") or {"espeak": None}
    if set(voices) != {"espeak"}:
        print(
            "voices: "
            + "; ".join(
                f"{SYNTHESISERS[name]} "
                + ", ".join(f"{role} {n}" for role, n in by_role.items())
                for name, by_role in voices.items()
            )
            + " speakers"
        )
    state = "already there, reused" if summary["reused"] else "made"
    print(
        f"{summary['out_dir']}: {summary['total_hours']:.3f} h of audio, "
        f"{summary['phones_39_seen']}/39 folded phones, {state} "
        f"({summary['wall_seconds']:.1f} s)"
    )
    if pool:
        state = "already there, reused" if pool["reused"] else "made"
        print(
            f"{pool['folder']}: pool of {pool['speakers']} speakers, "
            f"{pool['utterances']} utterances, {pool['seconds'] / 60:.1f} min, "
            f"{state} (phones kept aside: an unlabelled source for "
            "unlabelled_prepare.py)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
