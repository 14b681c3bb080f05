"""The gFEX CNNs: training inputs, models, the training loop, evaluation, export, Horovod and sweeps.

``config`` (TrainConfig), ``prepare`` (files, labels, split, normalization; numpy only), ``stream``
(the tf.data pipeline), ``models`` and ``symmetry``, ``train``, ``evaluate``, ``export``, ``context``
(the single-process training context), ``horovod`` (its Horovod counterpart), ``launch``
(``train --ranks``), ``sweep`` (grids of trainings through the batch layer) and ``demo``.
TensorFlow is imported only inside the functions that need it.
"""

from sbt_batch.cnn.config import TrainConfig, TrainingInterrupted
from sbt_batch.cnn.evaluate import compare_runs, evaluate_run
from sbt_batch.cnn.export import export_run
from sbt_batch.cnn.train import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "compare_runs", "evaluate_run", "export_run", "train"]
