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

import numpy as np

from sbt_batch.common.console import import_keras
from sbt_batch.common.errors import UserError

OUTPUTS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, one-line description and layer factory."""

    name: str
    description: str
    layers: Callable[..., list[Any]]
    takes_padding: bool = False  # layers(keras, padding=...) pads itself (else PhiPad goes before each 3x3 conv)


MODELS: dict[str, ModelSpec] = {}
PURPOSE = "building a CNN"  # what the install hint names when Keras is missing

LayerFactory = Callable[..., list[Any]]


def register(name: str, description: str, takes_padding: bool = False) -> Callable[[LayerFactory], LayerFactory]:
    """Decorator: register a function ``f(keras) -> [layers]`` (everything between input and output).

    With ``takes_padding`` the function is called as ``f(keras, padding=...)`` and handles ``--padding`` itself.
    """

    def wrap(fn: LayerFactory) -> LayerFactory:
        MODELS[name] = ModelSpec(name, description, fn, takes_padding)
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


def build_model(name: str, input_shape: tuple[int, int, int], output: str = "softmax", padding: str = "valid") -> Any:
    """Build the registered model ``name`` for ``input_shape`` with a softmax-2 or sigmoid output.

    ``padding`` 'circular' / 'circular-reflect' puts a :class:`PhiPad` (phi periodic, eta zero / reflected)
    before every 3x3 convolution; 'valid' (the default) builds the notebook's models unchanged.
    """
    keras = import_keras(PURPOSE)

    check_model(name, output)
    head = keras.layers.Dense(2, activation="softmax") if output == "softmax" else keras.layers.Dense(1, activation="sigmoid")
    layers = _padded(keras, MODELS[name], padding)
    return keras.Sequential([keras.Input(input_shape), *layers, head], name=name.replace("-", "_"))


def signal_score(pred: Any) -> Any:
    """P(signal) from model output: column 1 of a softmax, or the sigmoid unit."""
    return pred[:, 1] if pred.shape[-1] == 2 else pred[:, 0]


# --------------------------------------------------------------------------- symmetry-aware models


def _padded(keras: Any, spec: ModelSpec, padding: str) -> list[Any]:
    """The layers of ``spec``, with a PhiPad before each 3x3 valid convolution unless ``padding`` is 'valid'."""
    from sbt_batch.cnn.symmetry import check_padding, keras_layers, pad_modes

    check_padding(padding)
    if spec.takes_padding:
        return spec.layers(keras, padding=padding)
    layers = spec.layers(keras)
    if padding == "valid":
        return layers
    phi, eta = pad_modes(padding)
    out: list[Any] = []
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3) and layer.padding == "valid":
            out.append(keras_layers()["PhiPad"](1, eta, phi))
        out.append(layer)
    return out


def residual_layers(keras: Any, padding: str, filters: tuple[int, int, int]) -> list[Any]:
    """A 3x3 stem conv and three residual blocks of ``filters`` (2x2 max-pools after the first two), flattened."""
    from sbt_batch.cnn.symmetry import keras_layers, pad_modes

    phi, eta = pad_modes(padding) if padding != "valid" else ("zero", "zero")  # valid: 'same' zero padding
    L = keras_layers()
    return [
        L["PhiPad"](1, eta, phi),
        keras.layers.Conv2D(filters[0], 3, activation="relu"),
        L["ResidualBlock"](filters[0], eta, phi),
        _pool(keras),
        L["ResidualBlock"](filters[1], eta, phi),
        _pool(keras),
        L["ResidualBlock"](filters[2], eta, phi),
        keras.layers.Flatten(),
    ]


@register("res3", "three residual blocks (16, 32, 32 filters; 3x3 convs, 2x2 max-pools), flatten, dense: 40,802 parameters",
          takes_padding=True)
def _res3(keras: Any, padding: str = "valid") -> list[Any]:
    return residual_layers(keras, padding, (16, 32, 32))


@register("res3-wide", "res3 with 24, 48, 48 filters: 89,234 parameters", takes_padding=True)
def _res3_wide(keras: Any, padding: str = "valid") -> list[Any]:
    return residual_layers(keras, padding, (24, 48, 48))


@register("3c-gpool", "three 3x3 convs (32, 64, 64; 2x2 max-pools after the first two), global max and mean pool, "
          "dense 64, dropout 0.25: 64,130 parameters")
def _m3c_gpool(keras: Any) -> list[Any]:
    from sbt_batch.cnn.symmetry import keras_layers

    return [_conv(keras, 32), _pool(keras), _conv(keras, 64), _pool(keras), _conv(keras, 64),
            keras_layers()["GlobalMaxMean"](), keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.25)]


def custom_objects() -> dict[str, Any]:
    """Custom layers a saved model.keras may hold (pass to ``keras.models.load_model``)."""
    from sbt_batch.cnn.symmetry import keras_layers

    return dict(keras_layers())


def model_cost(model: Any) -> dict[str, int]:
    """Trainable parameters and multiply-accumulates per image of a built model (convolutions and dense layers)."""
    keras = import_keras(PURPOSE)

    macs = 0
    for layer, out_shape in _cost_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            macs += int(out_shape[1] * out_shape[2] * kh * kw * layer.kernel.shape[2] * layer.filters)
        elif isinstance(layer, keras.layers.Dense):
            macs += int(layer.kernel.shape[0] * layer.kernel.shape[1])
    params = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    return {"parameters": params, "macs": macs}


def _cost_layers(model: Any) -> list[tuple[Any, Any]]:
    """Every leaf layer of a Sequential model with its output shape, looking inside composite layers."""
    out = []
    shape = model.input_shape
    for layer in model.layers:
        out_shape = layer.compute_output_shape(shape)
        if hasattr(layer, "cost_layers"):  # ResidualBlock: its convolutions
            out.extend(layer.cost_layers(shape))
        else:
            out.append((layer, out_shape))
        shape = out_shape
    return out
