"""gFEX ntuples (ROOT, local or root:// / https://) to HDF5 images, in bounded memory; never imports TensorFlow.

Layers, as in uproot: ``source`` (open files, check trees and branches, read steps of entries;
``remote`` for URLs, ``baskets`` for the TTree fast path), ``geometry`` (the eta x phi grid from the
maps tree), ``output`` (the HDF5 layout, ``h5chunks`` for whole-chunk encoding), ``driver``
(:func:`convert`, in-process or as dask ``tasks`` on a ``cluster``), ``merge`` and ``samples``
(synthetic ntuples for demos and tests). ``names`` holds the tree, branch and dataset names.
"""

from sbt_batch.convert.driver import ConvertResult, convert
from sbt_batch.convert.merge import MergeResult, merge_outputs
from sbt_batch.convert.source import NtupleInput, read_entries, scan_input

__all__ = ["ConvertResult", "MergeResult", "NtupleInput", "convert", "merge_outputs", "read_entries", "scan_input"]
