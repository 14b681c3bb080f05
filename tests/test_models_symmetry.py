"""Symmetry-aware models: PhiPad / res3 layers, frozen-pb and ONNX equal Keras, seeded augmentation with exact resume, TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import frozen_graph_def, run_frozen_graph

from sbt_batch.cnn import models as M
from sbt_batch.cnn import symmetry as S
from sbt_batch.common.errors import UserError


def _x(n: int = 5, c: int = 1) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(n, 26, 32, c)).astype(np.float32)


def test_phipad_is_wrap_in_phi_and_zero_or_reflect_in_eta() -> None:
    x = _x()
    pad = S.keras_layers()["PhiPad"]
    wrap = np.pad(x, [(0, 0), (0, 0), (2, 2), (0, 0)], mode="wrap")
    for eta, mode in (("zero", "constant"), ("reflect", "reflect")):
        want = np.pad(wrap, [(0, 0), (2, 2), (0, 0), (0, 0)], mode=mode)
        np.testing.assert_array_equal(np.asarray(pad(2, eta)(x)), want)


def test_valid_padding_keeps_the_notebook_models_and_res3_is_small() -> None:
    import keras

    for name in ("1c", "2c", "1c1m", "2c2m", "2c2m-dropout"):
        keras.utils.set_random_seed(3)
        a = M.build_model(name, (26, 32, 1))
        keras.utils.set_random_seed(3)
        b = M.build_model(name, (26, 32, 1), padding="valid")
        assert [type(layer).__name__ for layer in a.layers] == [type(layer).__name__ for layer in b.layers]
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v)
    assert M.model_cost(M.build_model("2c2m", (26, 32, 1))) == {"parameters": 22658, "macs": 2607360}
    res = M.model_cost(M.build_model("res3", (26, 32, 1), padding="circular"))
    assert res["parameters"] < 100_000 and res["macs"] == 7823360, res
    circ = M.build_model("2c2m", (26, 32, 1), padding="circular")
    assert [type(layer).__name__ for layer in circ.layers].count("PhiPad") == 2
    with pytest.raises(UserError, match="--padding: unknown padding 'wrap'"):
        M.build_model("2c2m", (26, 32, 1), padding="wrap")


def test_circular_conv_stack_is_phi_equivariant() -> None:
    """Without pooling, a circularly padded network commutes with a roll by whole towers."""
    import keras

    L = S.keras_layers()
    net = keras.Sequential([keras.Input((26, 32, 1)), L["PhiPad"](1, "reflect"), keras.layers.Conv2D(4, 3),
                            L["ResidualBlock"](4, "reflect")])
    x = _x()
    np.testing.assert_allclose(np.asarray(net(np.roll(x, 5, axis=2))), np.roll(np.asarray(net(x)), 5, axis=2), atol=1e-5)
    np.testing.assert_allclose(np.asarray(net(x[:, ::-1].copy()))[:, ::-1].shape, np.asarray(net(x)).shape)


def test_augment_is_seeded_and_each_event_is_a_group_element() -> None:
    x = _x(8)
    a = S.augment_batch(x, "full", S.augment_rng(1, 2, 3))
    np.testing.assert_array_equal(a, S.augment_batch(x, "full", S.augment_rng(1, 2, 3)))
    assert not np.array_equal(a, S.augment_batch(x, "full", S.augment_rng(1, 2, 4)))
    group = S.group_elements("full")
    for i in range(len(x)):
        assert any(np.array_equal(a[i : i + 1], S.transform(x[i : i + 1], s, f)) for s, f in group)
    assert S.augment_batch(x, "none", S.augment_rng(1, 0, 0)) is x


def test_tta_scores_are_invariant() -> None:
    x = _x(3)
    score = lambda b: b[:, :5, :7, 0].sum(axis=(1, 2)) ** 2
    ref = S.averaged_scores(score, x, "full")
    np.testing.assert_allclose(S.averaged_scores(score, S.transform(x, 9, True), "full"), ref, rtol=1e-5)


@pytest.fixture(scope="module")
def sym_run(tmp_path_factory, gfex_signal, gfex_background) -> Path:
    from sbt_batch.cnn.train import train

    out = tmp_path_factory.mktemp("sym") / "run"
    train(signal=gfex_signal, background=gfex_background, model="res3", padding="circular-reflect", augment="full",
          tta="eta", out=str(out), epochs=1, max_events=60, split="0.5,0.2,0.3", seed=2, max_steps=2, progress=False)
    return out


def test_export_frozen_pb_and_onnx_match_keras_with_tta(sym_run: Path) -> None:
    import onnxruntime as ort

    from sbt_batch.cnn.evaluate import evaluate_run, load_run_model, run_stream
    from sbt_batch.cnn.export import export_run
    from sbt_batch.cnn.models import signal_score
    from sbt_batch.common.rundir import RunDir

    rd = RunDir(sym_run)
    stream, _, split = run_stream(rd)
    x = stream.read(split["test"])
    model = load_run_model(rd)
    ref = (np.asarray(model(x)) + np.asarray(model(x[:, ::-1].copy()))) / 2  # tta: eta
    info = export_run(sym_run, "frozen-pb")
    nodes = json.loads(Path(info["nodes"]).read_text())
    got = run_frozen_graph(frozen_graph_def(info["path"]), nodes, x)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    info = export_run(sym_run, "onnx")
    sess = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], ref, atol=1e-5)
    metrics = evaluate_run(sym_run, plots=False)
    with np.load(sym_run / "eval" / "roc.npz") as z:
        np.testing.assert_allclose(z["scores"], signal_score(ref), atol=1e-5)
    assert metrics["events"] == len(x)


def test_augmented_resume_gives_identical_weights(tmp_path: Path, gfex_signal, gfex_background) -> None:
    import keras

    from sbt_batch.cnn.train import train

    common = dict(signal=gfex_signal, background=gfex_background, model="2c2m", padding="circular", augment="full",
                  max_events=60, split="0.5,0.2,0.3", seed=4, batch_size=16, progress=False)
    train(**common, out=str(tmp_path / "full"), epochs=2)
    train(**common, out=str(tmp_path / "part"), epochs=1)
    train(resume=str(tmp_path / "part"), epochs=2)
    wa, wb = (keras.models.load_model(tmp_path / n / "model.keras", compile=False, custom_objects=M.custom_objects()).get_weights()
              for n in ("full", "part"))
    for u, v in zip(wa, wb):
        np.testing.assert_array_equal(u, v)


def test_bad_symmetry_options(gfex_signal, gfex_background) -> None:
    from sbt_batch.cnn.config import TrainConfig

    base = {"signal": [str(p) for p in gfex_signal], "background": [str(p) for p in gfex_background]}
    with pytest.raises(UserError, match="--augment: unknown symmetry group 'roll'"):
        TrainConfig.from_options({**base, "augment": "roll"})
    with pytest.raises(UserError, match="--tta: unknown symmetry group"):
        TrainConfig.from_options({**base, "tta": "all"})
    with pytest.raises(UserError, match="--padding"):
        TrainConfig.from_options({**base, "padding": "same"})


def test_res3_wide_and_3c_gpool_are_under_100k_and_models_take_two_channels() -> None:
    """res3-wide and 3c-gpool stay FPGA-sized; every model takes its channel count from the input (ET, ET / rho)."""
    wide = M.model_cost(M.build_model("res3-wide", (26, 32, 1), padding="circular"))
    assert wide == {"parameters": 89234, "macs": 17510400}
    gpool = M.build_model("3c-gpool", (26, 32, 1), padding="circular")
    assert M.model_cost(gpool) == {"parameters": 64130, "macs": 5851264}
    one = _x(4)  # two 2x2 pools: a roll by 4 towers in phi is a roll by 1 of the last feature map, which global pools forget
    np.testing.assert_allclose(np.asarray(gpool(np.roll(one, 4, axis=2))), np.asarray(gpool(one)), atol=1e-5)
    x = _x(3, c=2)
    for name in ("2c2m", "2c2m-dropout", "res3", "res3-wide", "3c-gpool"):
        model = M.build_model(name, (26, 32, 2), padding="circular")
        assert model.input_shape == (None, 26, 32, 2) and np.asarray(model(x)).shape == (3, 2)
    rng = np.random.default_rng(1)
    y = S.augment_batch(x, "full", rng)  # every channel of an event gets the same roll and reflection
    for i in range(len(x)):
        assert any(np.array_equal(y[i : i + 1], S.transform(x[i : i + 1], s, f)) for s, f in S.group_elements("full"))
