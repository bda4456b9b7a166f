"""The method: multi-teacher distillation for joint CTC/attention recognisers.

The three stage scripts stay short stories of their stage; what they share
lives here, and everything here is used by one of them::

    train_teacher.py  hparams, data, model, brain, checkpoints, runs, cluster
    save_teachers.py  teachers (list file, rebuilt teachers, targets),
                      store (write_store, report_store)
    train_kd.py       store (TeacherStore), strategies (weights, KD losses),
                      distill (KDBrain)

Tools around the method (results, significance, export, the mini corpus) live
outside it, in ``mtkd_tools/`` and ``tools/``.
"""


class RecipeError(ValueError):
    """A problem with the user's input (a file, a key, a path) that they can fix.

    The stage scripts print its message without a traceback and exit with
    status 2; the message says what is wrong, where, and what to do.
    """


# SpeechBrain's train logger, imported once without its torchvision warning
# (mtkd.train_log): every stage and tool imports mtkd before SpeechBrain
# would import it.
from mtkd import train_log  # noqa: E402, F401
