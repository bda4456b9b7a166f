"""Tools around the recipe, outside the method (``mtkd``): nothing here is
used by a stage script.

    results.py       what finished runs say: tables, plots (summarize_results.py,
                     run_demo.py)
    significance.py  per-utterance edit counts and the paired bootstrap
    export.py        a run as a folder for SpeechBrain's inference API, and the
                     helpers of transcribe.py (export_model.py, transcribe.py)
"""
