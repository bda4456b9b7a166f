"""Loading a stage's hyperparameters: HyperPyYAML, command-line overrides, ``base:``.

Every stage script starts with ``load_hparams(sys.argv[1:])``. It behaves like the
usual SpeechBrain preamble (``sb.parse_arguments`` + ``load_hyperpyyaml``) with
one addition that keeps the ten teacher files short: a YAML file whose top-level
key ``base`` names another file holds only plain values, which override that
base file. ``hparams/teachers/tea3.yaml`` is then five lines saying how teacher 3
differs, and ``python train_teacher.py hparams/teachers/tea3.yaml --batch_size 4``
still works: command-line overrides apply on top of the teacher's values.

The experiment folder receives the *resolved* hyperparameters (every value the
run used), as ``sb.create_experiment_directory`` writes them.
"""

import ast
import difflib
import io
import os
import re
import sys
from dataclasses import dataclass

import ruamel.yaml
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from mtkd import RecipeError


class HparamsError(RecipeError):
    """A hyperparameter file or override that cannot be used as given."""


@dataclass
class LoadedHparams:
    """What a stage script needs after parsing its command line."""

    hparams: dict
    run_opts: object
    # The HyperPyYAML file the values come from, and every override applied to
    # it (the ``base:`` child's values, then the command line): together they
    # are what ``sb.create_experiment_directory`` resolves and saves.
    yaml_file: str
    overrides: dict
    hparams_file: str


def _plain_yaml(text, where):
    """Parses YAML that must hold plain values only (no HyperPyYAML tags)."""
    try:
        return ruamel.yaml.YAML(typ="safe", pure=True).load(text) or {}
    except ruamel.yaml.YAMLError as err:
        raise HparamsError(f"{where}: not plain YAML values ({err})") from err


def _merge(into, update):
    """Recursively merges mapping ``update`` into ``into`` (a new dict)."""
    merged = dict(into)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_base(hparams_file, overrides):
    """Follows a ``base:`` chain; returns (HyperPyYAML file, merged overrides).

    Arguments
    ---------
    hparams_file : str
        The file named on the command line.
    overrides : dict
        Command-line overrides; they win over every file's values.
    """
    chain = []
    current = os.path.abspath(hparams_file)
    while True:
        if not os.path.isfile(current):
            where = f" (the base of {chain[-1]})" if chain else ""
            raise HparamsError(f"Hyperparameter file not found: {current}{where}")
        with open(current, encoding="utf-8") as f:
            text = f.read()
        # Only a file that starts with a plain `base:` line is a child file; a
        # full HyperPyYAML file (tags and all) ends the chain.
        first_keys = [
            line.split(":", 1)[0]
            for line in text.splitlines()
            if line and not line.startswith((" ", "#", "\t"))
        ]
        if "base" not in first_keys:
            break
        values = _plain_yaml(text, current)
        base = values.pop("base")
        chain.append((current, values))
        current = os.path.normpath(os.path.join(os.path.dirname(current), base))
        if len(chain) > 10:
            raise HparamsError(f"{hparams_file}: `base:` chain deeper than 10 files")
    merged = {}
    # The file named on the command line wins over its bases.
    for _, values in reversed(chain):
        merged = _merge(merged, values)
    return current, _merge(merged, overrides)


def _unknown_key_error(err, hparams_file, yaml_file, cli):
    """Names the unknown key, where it came from, and the closest known keys."""
    match = re.search(r"Override '([^']+)' not found in: (\[.*\])", str(err))
    if not match:
        return HparamsError(f"{hparams_file}: {err}")
    key, known = match.group(1), ast.literal_eval(match.group(2))
    source = "the command line" if key in cli else hparams_file
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return HparamsError(
        f"Unknown hyperparameter `{key}` (from {source}): {yaml_file} has no such "
        f"top-level key.{hint}"
    )


def load_hparams(argv):
    """Parses ``script.py HPARAMS.yaml [--key value ...]`` the SpeechBrain way.

    Returns a ``LoadedHparams``. Unknown keys (a typo on the command line or in a
    teacher file) stop with an error naming the key instead of being ignored.
    """
    hparams_file, run_opts, overrides_yaml = sb.parse_arguments(argv)
    cli = _plain_yaml(overrides_yaml or "", "command-line overrides")
    yaml_file, overrides = resolve_base(hparams_file, cli)
    with open(yaml_file, encoding="utf-8") as f:
        text = f.read()
    try:
        hparams = load_hyperpyyaml(io.StringIO(text), overrides)
    except KeyError as err:
        raise _unknown_key_error(err, hparams_file, yaml_file, cli) from err
    except ValueError as err:
        if "PLACEHOLDER" not in str(err):
            raise
        key = str(err).split("'")[1] if "'" in str(err) else str(err)
        raise HparamsError(
            f"{hparams_file}: `{key}` has no value. Give it on the command line, "
            f"e.g. `--{key} /path/to/...`."
        ) from err
    return LoadedHparams(hparams, run_opts, yaml_file, overrides, hparams_file)


def run_stage(main, argv):
    """Runs a stage's ``main(argv)``; a RecipeError ends it with its message.

    Input errors (a wrong key, a missing file, a corpus that does not fit) are
    the user's to fix: a one-paragraph message serves them better than a
    traceback. Anything else is a bug and keeps its traceback.
    """
    try:
        return main(argv)
    except RecipeError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        raise SystemExit(2) from None
