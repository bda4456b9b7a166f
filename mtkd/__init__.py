"""Shared code of the multi-teacher distillation recipe.

The three stage scripts (``train_teacher.py``, ``save_teachers.py``,
``train_kd.py``) stay short stories of their stage; what they share lives here.
"""


class RecipeError(ValueError):
    """A problem with the user's input (a file, a key, a path) that they can fix.

    The stage scripts print its message without a traceback and exit with
    status 2; the message says what is wrong, where, and what to do.
    """
