"""``--help`` of a stage script: the recipe's keys, then SpeechBrain's options.

SpeechBrain's own ``--help`` lists its run options only, in an order that
changes from run to run, and none of the YAML keys a user overrides. A
stage's help here prints the usage, every top-level key of the stage's YAML
(after its ``base:`` chain) with its default, and SpeechBrain's run options
sorted by name.
"""

import contextlib
import io
import os
import re
import sys
import textwrap

import speechbrain as sb

from mtkd.hparams import ALIAS_OF_KEY, _as_tuple, _load_yaml, resolve_base

HELP_FLAGS = ("-h", "--help")


def wants_help(argv):
    return any(arg in HELP_FLAGS for arg in argv)


def _shown(value):
    """A default as a user types it: plain values, references, `(required)`;
    None for objects (``!new:``, ``!name:``, ...), which are not overridden
    from the command line."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag == "!PLACEHOLDER":
        return "(required)"
    if tag == "!ref":
        return f"{value.value}  (follows)"
    if _as_tuple(value) is not None:
        return value.value if hasattr(value, "value") else str(value)
    if tag or isinstance(value, dict):
        return None
    if isinstance(value, list):
        items = [_shown(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"
    return str(value)


def recipe_keys(hparams_file):
    """[(key, default text)] of the plain top-level keys of ``hparams_file``
    (its ``base:`` file's, with the child's values and ``add:`` keys); a key
    with a newer option name is listed by that name."""
    base_file, text, overrides, _ = resolve_base(hparams_file)
    values = dict(_load_yaml(text, base_file))
    values.update(overrides)
    keys = []
    for key, value in values.items():
        if key.startswith("__") or key == "base":
            continue
        shown = _shown(value)
        if shown is None:
            continue
        if key in ALIAS_OF_KEY:  # listed by its new name (hparams.OPTION_ALIASES)
            key, shown = ALIAS_OF_KEY[key], f"{shown}  (or --{key}, its original name)"
        keys.append((key, shown))
    return keys


def speechbrain_options():
    """SpeechBrain's run options, as its ``--help`` describes them, sorted."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        sb.parse_arguments(["--help"])
    text = out.getvalue()
    section = re.split(r"^options:\s*$", text, flags=re.M)[-1]
    blocks, current = [], []
    for line in section.splitlines():
        if re.match(r"^  -", line) and current:
            blocks.append(current)
            current = []
        if line.strip():
            current.append(line)
    if current:
        blocks.append(current)
    blocks = [b for b in blocks if not b[0].strip().startswith("-h")]
    blocks.sort(key=lambda block: block[0].strip().lstrip("-").lower())
    return "\n".join(line for block in blocks for line in block)


def stage_help(script, hparams_file, summary):
    """The whole help text of a stage script."""
    width = max(len(key) for key, _ in recipe_keys(hparams_file)) + 4
    lines = [
        f"usage: python {script} HPARAMS.yaml [--KEY VALUE ...] [SpeechBrain options]",
        "",
        summary,
        "",
        *textwrap.wrap(
            f"The recipe's keys and their defaults ({hparams_file} and its base "
            "files); any of them can be given as --KEY VALUE, e.g. --batch_size "
            "4; lists as [64, 128] or (64, 128). '(follows)': derived from "
            "other keys unless given.",
            width=79,
        ),
        "",
    ]
    lines += [f"  --{key:<{width}}{shown}" for key, shown in recipe_keys(hparams_file)]
    lines += ["", "SpeechBrain's run options:", speechbrain_options()]
    return "\n".join(lines)


def print_help_if_asked(argv, script, default_hparams, summary):
    """Prints the stage's help and returns True when ``argv`` asks for it; the
    keys are those of the YAML named in ``argv``, else ``default_hparams``."""
    if not wants_help(argv):
        return False
    named = [arg for arg in argv if arg.endswith((".yaml", ".yml"))]
    text = stage_help(script, named[0] if named else default_hparams, summary)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True
