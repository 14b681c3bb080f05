"""The H->bb kinematic classifier: tabular inputs, scalers, dense NN, binned Asimov sensitivity, repeats.

``columns`` and ``data`` (inputs and event weights), ``scalers``, ``model`` (the dense network),
``train`` (one training), ``repeats`` (repeated trainings and their summary), ``sensitivity`` (the
binned Asimov significance), ``plots``, ``sample`` (synthetic inputs) and ``collect`` (the batch
layer's collector of ``submit train-tabular`` runs). Modules import numpy at most; Keras is imported
only inside the training functions.
"""

__all__ = ["collect", "columns", "data", "model", "plots", "repeats", "sample", "scalers", "sensitivity", "train"]
