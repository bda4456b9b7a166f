"""Alias kept for model folders exported before the export tools moved to
``mtkd_tools/export.py``: their ``hyperparams.yaml`` names
``mtkd.export.make_searcher`` and ``mtkd.export.PhoneTokenizer``."""

from mtkd_tools.export import PhoneTokenizer, make_searcher

__all__ = ["PhoneTokenizer", "make_searcher"]
