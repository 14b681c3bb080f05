"""The dense classifier: configurable hidden layers, units and activations; SGD or Adam."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sbt_batch.common.console import import_keras
from sbt_batch.common.errors import UserError

OPTIMIZERS = ("adam", "sgd")
PURPOSE = "sbt-batch train-tabular"  # what the install hint names when TensorFlow is missing
ACTIVATIONS = ("relu", "elu", "selu", "tanh", "sigmoid", "swish", "gelu", "leaky_relu", "softplus", "linear")


def layer_spec(layers: int, units: Sequence[int] | int, activation: Sequence[str] | str) -> list[tuple[int, str]]:
    """Expand ``--layers/--units/--activation`` (one value, or one per layer) into (units, activation) pairs."""
    if layers < 1:
        raise UserError(f"--layers: need at least one hidden layer, got {layers}")
    unit_list = [int(units)] if isinstance(units, int) else [int(u) for u in units]
    act_list = [activation] if isinstance(activation, str) else list(activation)
    for name, values in (("--units", unit_list), ("--activation", act_list)):
        if len(values) not in (1, layers):
            raise UserError(f"{name}: give one value or {layers} (one per layer), got {len(values)}")
    unit_list = unit_list * layers if len(unit_list) == 1 else unit_list
    act_list = act_list * layers if len(act_list) == 1 else act_list
    if any(u < 1 for u in unit_list):
        raise UserError(f"--units: every layer needs at least 1 unit, got {unit_list}")
    for act in act_list:
        if act not in ACTIVATIONS:
            raise UserError(f"--activation: unknown activation {act!r} (choose from {', '.join(ACTIVATIONS)})")
    return list(zip(unit_list, act_list))


def build_model(n_inputs: int, spec: list[tuple[int, str]], dropout: float = 0.0) -> Any:
    """A Keras dense network: inputs -> hidden layers (optional dropout) -> one sigmoid output."""
    keras = import_keras(PURPOSE)

    inputs = keras.Input(shape=(n_inputs,), name="inputs")
    x = inputs
    for i, (units, act) in enumerate(spec):
        x = keras.layers.Dense(units, activation=act, name=f"dense_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(inputs, outputs, name="kinematics_dnn")


def make_optimizer(name: str, lr: float) -> Any:
    """An SGD (momentum 0.9) or Adam optimizer with learning rate ``lr``."""
    name = name.lower()
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if not lr > 0:
        raise UserError(f"--lr: must be > 0, got {lr}")
    keras = import_keras(PURPOSE)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=lr)


def compile_model(model: Any, optimizer: str, lr: float) -> Any:
    """Compile for weighted binary cross-entropy with weighted accuracy."""
    model.compile(optimizer=make_optimizer(optimizer, lr), loss="binary_crossentropy", weighted_metrics=["accuracy"])
    return model
