"""CNN model registry: the notebook's five gFEX classifiers, plus a one-line way to add more.

Every model is a stack of layers between the (rows, 32, C) input and the output layer. Convolutions
are 3x3 with ReLU (valid padding), pools are 2x2 max-pools. The output is either a two-class softmax
(default, as in the notebook: exported graphs keep the two output nodes the DNNDK/Vitis AI flow and
the notebook's evaluation expect; score = P(signal) = output[:, 1]) or one sigmoid unit.

Add a model::

    @register("3c3m", "three conv + pool blocks")
    def _three(keras):
        return [keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2), ...,
                keras.layers.Flatten()]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sbt_batch.errors import UserError

OUTPUTS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, one-line description and layer factory."""

    name: str
    description: str
    layers: Callable[[Any], list[Any]]


MODELS: dict[str, ModelSpec] = {}


def register(name: str, description: str) -> Callable[[Callable[[Any], list[Any]]], Callable[[Any], list[Any]]]:
    """Decorator: register a function ``f(keras) -> [layers]`` (everything between input and output)."""

    def wrap(fn: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
        MODELS[name] = ModelSpec(name, description, fn)
        return fn

    return wrap


def _conv(keras: Any, filters: int) -> Any:
    return keras.layers.Conv2D(filters, (3, 3), activation="relu")


def _pool(keras: Any) -> Any:
    return keras.layers.MaxPooling2D((2, 2))


@register("1c", "one 3x3 conv (32), flatten, dense")
def _m1c(keras: Any) -> list[Any]:
    return [_conv(keras, 32), keras.layers.Flatten()]


@register("2c", "two 3x3 convs (32, 64), flatten, dense")
def _m2c(keras: Any) -> list[Any]:
    return [_conv(keras, 32), _conv(keras, 64), keras.layers.Flatten()]


@register("1c1m", "3x3 conv (32), 2x2 max-pool, flatten, dense")
def _m1c1m(keras: Any) -> list[Any]:
    return [_conv(keras, 32), _pool(keras), keras.layers.Flatten()]


@register("2c2m", "two (3x3 conv, 2x2 max-pool) blocks (32, 64), flatten, dense")
def _m2c2m(keras: Any) -> list[Any]:
    return [_conv(keras, 32), _pool(keras), _conv(keras, 64), _pool(keras), keras.layers.Flatten()]


@register("2c2m-dropout", "2c2m with dropout 0.25, dense 128 ReLU and dropout 0.5 (the improved model)")
def _m2c2m_dropout(keras: Any) -> list[Any]:
    return [
        _conv(keras, 32),
        _pool(keras),
        _conv(keras, 64),
        _pool(keras),
        keras.layers.Dropout(0.25),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
    ]


def check_model(name: str, output: str = "softmax") -> None:
    """Raise a UserError for an unknown model or output name (with the valid choices)."""
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"--model: unknown model '{name}'{hint}; choose from {', '.join(MODELS)}")
    if output not in OUTPUTS:
        raise UserError(f"--output: unknown output layer '{output}' (choose from {', '.join(OUTPUTS)})")


def build_model(name: str, input_shape: tuple[int, int, int], output: str = "softmax") -> Any:
    """Build the registered model ``name`` for ``input_shape`` with a softmax-2 or sigmoid output."""
    import keras

    check_model(name, output)
    head = keras.layers.Dense(2, activation="softmax") if output == "softmax" else keras.layers.Dense(1, activation="sigmoid")
    return keras.Sequential([keras.Input(input_shape), *MODELS[name].layers(keras), head], name=name.replace("-", "_"))


def signal_score(pred: Any) -> Any:
    """P(signal) from model output: column 1 of a softmax, or the sigmoid unit."""
    return pred[:, 1] if pred.shape[-1] == 2 else pred[:, 0]
