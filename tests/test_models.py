"""Model registry: the notebook's five CNNs, grey and RGB input, softmax and sigmoid outputs."""

from __future__ import annotations

import numpy as np
import pytest

from sbt_batch.cnn import models as M
from sbt_batch.common.errors import UserError

FIVE = ["1c", "2c", "1c1m", "2c2m", "2c2m-dropout"]


def test_registry_has_the_five_models() -> None:
    assert list(M.MODELS)[:5] == FIVE
    assert all(M.MODELS[n].description for n in FIVE)


@pytest.mark.parametrize("name", FIVE)
def test_build_shapes(name: str) -> None:
    keras = pytest.importorskip("keras")
    grey = M.build_model(name, (26, 32, 1))
    assert grey.input_shape == (None, 26, 32, 1) and grey.output_shape == (None, 2)
    kinds = [type(layer).__name__ for layer in grey.layers]
    assert kinds.count("Conv2D") == (2 if name.startswith("2c") else 1)
    assert kinds.count("MaxPooling2D") == {"1c": 0, "2c": 0, "1c1m": 1}.get(name, 2)
    assert ("Dropout" in kinds) == (name == "2c2m-dropout")
    assert all(layer.kernel_size == (3, 3) for layer in grey.layers if isinstance(layer, keras.layers.Conv2D))
    rgb = M.build_model(name, (26, 32, 3), output="sigmoid")
    assert rgb.output_shape == (None, 1)
    pred = np.asarray(grey(np.zeros((4, 26, 32, 1), np.float32)))
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-6)  # softmax-2
    assert M.signal_score(pred).shape == (4,)


def test_unknown_model_and_output() -> None:
    with pytest.raises(UserError, match="unknown model '2c2n'.*did you mean '2c2m'"):
        M.check_model("2c2n")
    with pytest.raises(UserError, match="--output"):
        M.check_model("2c2m", "tanh")


def test_register_a_new_model() -> None:
    pytest.importorskip("keras")

    @M.register("test-dense", "flatten and dense only")
    def _dense(keras):  # type: ignore[no-untyped-def]
        return [keras.layers.Flatten(), keras.layers.Dense(8, activation="relu")]

    try:
        model = M.build_model("test-dense", (4, 32, 1))
        assert model.output_shape == (None, 2)
    finally:
        del M.MODELS["test-dense"]
