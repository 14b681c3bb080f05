"""Shared pieces every stage uses; imports no other sbt_batch package.

errors (UserError and friends), console (logging, progress bars), fileio (atomic writes,
temporaries), config (YAML), inputs (file lists, globs, @lists), urls, rundir (training run
directories), metrics (ROC, AUC), plots (matplotlib + mplhep), provenance, launchenv (rank and
scheduler variables) and optional (imports of optional packages with one install hint).
"""

__all__ = ["config", "console", "errors", "fileio", "inputs", "launchenv", "metrics", "optional", "plots",
           "provenance", "rundir", "urls"]
