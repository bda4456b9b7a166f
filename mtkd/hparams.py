"""Loading a stage's hyperparameters: HyperPyYAML, command-line overrides, ``base:``.

Every stage script starts with ``load_hparams(sys.argv[1:])``. It behaves like the
usual SpeechBrain preamble (``sb.parse_arguments`` + ``load_hyperpyyaml``) with
one addition that keeps derived configurations short. A YAML file whose
top-level key ``base`` names another file holds values only (``!ref`` allowed,
no new objects):

- its keys override the base file's values (a misspelt key is an error);
- keys under ``add:`` are new keys that the base file does not have.

``hparams/teachers/tea3.yaml`` is then a few lines saying how teacher 3 differs
from ``hparams/teacher.yaml``, and ``train_kd.yaml`` adds the distillation keys
to the same model. Command-line overrides apply on top of everything:
``python train_teacher.py hparams/teachers/tea3.yaml --batch_size 4``.

Each experiment folder receives the *resolved* hyperparameters
(``hyperparams.yaml``): every value the run used, in one file.
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
from hyperpyyaml import load_hyperpyyaml, resolve_references

from mtkd import RecipeError

MAX_BASE_DEPTH = 10

# Keys that were renamed: an old name on a command line or in a child file gets
# an error that names the new one.
RENAMED_KEYS = {"speed_perturb": "augment"}


class HparamsError(RecipeError):
    """A hyperparameter file or override that cannot be used as given."""


@dataclass
class LoadedHparams:
    """What a stage script needs after parsing its command line."""

    hparams: dict
    run_opts: object
    hparams_file: str  # the file named on the command line
    yaml_text: str  # the base HyperPyYAML text with `add:` keys appended
    overrides: dict  # child files' values, then the command line
    sources: list  # every file read, command-line file first


def _load_yaml(text, where):
    """Parses override YAML, keeping tags such as ``!ref`` as they are written."""
    try:
        return ruamel.yaml.YAML(typ="rt").load(text) or {}
    except ruamel.yaml.YAMLError as err:
        raise HparamsError(f"{where}: not valid YAML ({err})") from err


def _last_wins(text):
    """Keeps the last of repeated top-level keys (``--lr 1 --lr 2`` means 2)."""
    blocks = {}
    for line in text.splitlines():
        if line and not line[0].isspace():
            key = line.split(":", 1)[0]
            blocks.pop(key, None)  # a repeated key moves to the end
            blocks[key] = [line]
        elif blocks:
            blocks[next(reversed(blocks))].append(line)
    return "\n".join(line for block in blocks.values() for line in block)


def _dump_yaml(values):
    """Override values (tags included) back to YAML text."""
    stream = io.StringIO()
    ruamel.yaml.YAML(typ="rt").dump(dict(values), stream)
    return stream.getvalue()


def _merge(into, update):
    """Recursively merges mapping ``update`` into ``into`` (a new dict)."""
    merged = dict(into)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_child_file(text):
    """A child file has a top-level ``base:`` key (and plain values only)."""
    return any(re.match(r"base\s*:", line) for line in text.splitlines())


def resolve_base(hparams_file, overrides=None):
    """Follows a ``base:`` chain.

    Returns (base file path, its text with every ``add:`` block appended,
    merged overrides: child values then ``overrides``, list of files read).
    """
    chain, added = [], {}
    current = os.path.abspath(hparams_file)
    while True:
        if not os.path.isfile(current):
            where = f" (the base of {chain[-1][0]})" if chain else ""
            raise HparamsError(f"Hyperparameter file not found: {current}{where}")
        with open(current, encoding="utf-8") as f:
            text = f.read()
        if not _is_child_file(text):
            break
        values = _load_yaml(text, current)
        base = values.pop("base")
        added = _merge(values.pop("add", None) or {}, added)
        chain.append((current, values))
        current = os.path.normpath(os.path.join(os.path.dirname(current), base))
        if len(chain) > MAX_BASE_DEPTH:
            raise HparamsError(f"{hparams_file}: `base:` chain deeper than 10 files")
    clash = sorted(k for k in added if re.search(rf"^{re.escape(k)}\s*:", text, re.M))
    if clash:
        raise HparamsError(
            f"{hparams_file}: `add:` keys {clash} already exist in {current}; "
            "override them as plain keys instead."
        )
    merged = {}
    for _, values in reversed(chain):  # the command-line file wins over its bases
        merged = _merge(merged, values)
    if added:
        text += "\n# Keys added by " + chain[0][0] + "\n" + _dump_yaml(added)
    sources = [path for path, _ in chain] + [current]
    return current, text, _merge(merged, overrides or {}), sources


def _unknown_key_error(err, hparams_file, base_file, cli):
    """Names the unknown key, where it came from, and the closest known keys."""
    match = re.search(r"Override '([^']+)' not found in: (\[.*\])", str(err))
    if not match:
        return HparamsError(f"{hparams_file}: {err}")
    key, known = match.group(1), ast.literal_eval(match.group(2))
    source = "the command line" if key in cli else hparams_file
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    if key in RENAMED_KEYS:
        hint = f" It was renamed: use `{RENAMED_KEYS[key]}`."
    return HparamsError(
        f"Unknown hyperparameter `{key}` (from {source}): {base_file} has no such "
        f"top-level key.{hint}"
    )


def load_hparams(argv):
    """Parses ``script.py HPARAMS.yaml [--key value ...]`` the SpeechBrain way.

    Returns a ``LoadedHparams``. Unknown keys (a typo on the command line or in a
    child file) stop with an error naming the key instead of being ignored.
    """
    hparams_file, run_opts, overrides_yaml = sb.parse_arguments(argv)
    cli = _load_yaml(_last_wins(overrides_yaml or ""), "command-line overrides")
    base_file, text, overrides, sources = resolve_base(hparams_file, cli)
    try:
        hparams = load_hyperpyyaml(io.StringIO(text), _dump_yaml(overrides))
    except KeyError as err:
        raise _unknown_key_error(err, hparams_file, base_file, cli) from err
    except ValueError as err:
        if "PLACEHOLDER" not in str(err):
            raise
        key = str(err).split("'")[1] if "'" in str(err) else str(err)
        raise HparamsError(
            f"{hparams_file}: `{key}` has no value. Give it on the command line, "
            f"e.g. `--{key} /path/to/...`."
        ) from err
    return LoadedHparams(hparams, run_opts, hparams_file, text, overrides, sources)


def save_resolved_hparams(loaded):
    """Writes ``<output_folder>/hyperparams.yaml``: every value the run used.

    Call after ``sb.create_experiment_directory(output_folder)``. SpeechBrain
    resolves a single file; here values come from a chain of files, so the
    resolved text is written here (main process only).
    """
    folder = loaded.hparams["output_folder"]
    if not sb.utils.distributed.if_main_process():
        return
    resolved = resolve_references(
        io.StringIO(loaded.yaml_text), _dump_yaml(loaded.overrides)
    )
    path = os.path.join(folder, "hyperparams.yaml")
    with open(path + ".tmp", "w", encoding="utf-8") as w:
        w.write("# Every value this run used. Made from (first wins):\n")
        w.writelines(f"#   {source}\n" for source in loaded.sources)
        w.write(f"# command line: {' '.join(sys.argv)}\n")
        w.write(resolved.getvalue())
    os.replace(path + ".tmp", path)


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
