"""The teacher store: what distillation needs from every teacher, by utterance ID.

Written once by ``save_teachers.py`` (stage 2), read by the student (stage 3)
with any batch size, order, sampler or augmentation: nothing in it depends on
how the utterances were batched when it was made. A store is a folder of HDF5
*parts*, each holding some teachers for every utterance of every split, and
at most one *unlabelled part* (every teacher on audio without transcripts);
its layout is described in ``docs/store-format.md``.

    format.py  names, version, settings, part metadata and part file names
    writer.py  ``write_store``: plan the parts (resume), claim, run, write
    unlabelled.py  ``write_unlabelled_part``: every teacher on audio without
               transcripts, teacher-forced on their consensus
    reader.py  ``TeacherStore`` (read by utterance ID), collate, summary
    merge.py   ``report_store``: summary, and all parts merged into one file
"""

from mtkd.store.format import StoreError
from mtkd.store.merge import report_store
from mtkd.store.reader import TeacherStore, collate_teacher_targets
from mtkd.store.unlabelled import write_unlabelled_part
from mtkd.store.writer import write_store

__all__ = [
    "StoreError",
    "TeacherStore",
    "collate_teacher_targets",
    "report_store",
    "write_store",
    "write_unlabelled_part",
]
