"""The H->bb kinematic classifier: tabular inputs, scalers, dense NN, binned Asimov sensitivity, repeats.

Modules import numpy at most; Keras is imported only inside the training functions.
"""
