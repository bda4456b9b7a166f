"""Shared code of the multi-teacher distillation recipe.

The three stage scripts (``train_teacher.py``, ``save_teachers.py``,
``train_kd.py``) stay short stories of their stage; what they share lives here.
"""
