"""The SmallCNN and the authors' released weights."""

import keras
import numpy as np
import pytest
from conftest import REFERENCE_WEIGHTS, needs_reference_weights

import keras_lfr


def test_small_cnn_architecture_and_initialisation():
    cnn = keras_lfr.models.small_cnn()
    names = [layer.name for layer in cnn.layers if layer.weights]
    assert names == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3"]
    assert cnn.output_shape == (None, 10)
    assert cnn.get_layer("fc1").kernel.shape == (1024, 200)
    assert not np.any(cnn.get_layer("fc3").kernel.numpy())
    conv = cnn.get_layer("conv2").kernel.numpy()
    # Kaiming normal, fan_in = 3 * 3 * 32: std sqrt(2 / 288).
    assert abs(conv.std() - np.sqrt(2 / 288)) < 0.01
    assert "dropout" not in [layer.name for layer in keras_lfr.models.small_cnn(dropout=0).layers]


def reference_cnn():
    return keras_lfr.models.load_weights_npz(keras_lfr.models.small_cnn(), REFERENCE_WEIGHTS)


@needs_reference_weights
def test_reference_weights_load_and_classify_mnist():
    cnn = reference_cnn()
    x, y = next(iter(keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=500)))
    accuracy = np.mean(np.argmax(cnn.predict(x, verbose=0), axis=1) == y.numpy())
    assert accuracy > 0.98


@needs_reference_weights
def test_local_flatness_grows_with_epsilon_on_the_reference_model():
    cnn = reference_cnn()
    x, y = next(iter(keras_lfr.data.load("mnist", "test", batch_size=64, num_examples=64)))
    at_x = keras_lfr.local_flatness(cnn, x, y, 0.0, 0.01, 1)
    in_ball = keras_lfr.local_flatness(cnn, x, y, 0.3, 0.01, 5)
    assert np.all(in_ball >= at_x - 1e-6)
    assert np.mean(in_ball) > 1.1 * np.mean(at_x)


def test_mismatched_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{"conv9/kernel": np.zeros(1)})
    with pytest.raises(ValueError, match="name no layer"):
        keras_lfr.models.load_weights_npz(keras_lfr.models.small_cnn(), path)
    np.savez(path, **{"fc3/bias": np.zeros(10)})
    with pytest.raises(ValueError, match=r"has no arrays \['conv1/kernel'"):
        keras_lfr.models.load_weights_npz(keras_lfr.models.small_cnn(), path)
    arrays = {
        f"{layer.name}/{weight}": getattr(layer, weight).numpy()
        for layer in keras_lfr.models.small_cnn().layers
        if layer.weights
        for weight in ("kernel", "bias")
    }
    arrays["fc3/kernel"] = np.zeros((3, 3))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="Shape mismatch for 'fc3/kernel'"):
        keras_lfr.models.load_weights_npz(keras_lfr.models.small_cnn(), path)


def test_to_float32_computes_the_weights_function_exactly(tmp_path):
    import keras

    from trainers import evaluating

    keras.utils.set_random_seed(0)
    mixed = keras_lfr.models.small_cnn(dropout=0.0, dtype="mixed_bfloat16")
    for layer in mixed.layers:  # non-zero weights everywhere (fc3 starts at zero)
        layer.set_weights([np.full(w.shape, 0.02, "float32") + w for w in layer.get_weights()])
    reference = keras_lfr.models.small_cnn(dropout=0.0)
    reference.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    copy = keras_lfr.models.to_float32(mixed)
    assert {layer.dtype_policy.compute_dtype for layer in copy.layers} == {"float32"}
    np.testing.assert_array_equal(copy(x), reference(x))
    assert np.abs(mixed(x).numpy() - reference(x).numpy()).max() > 1e-5  # bf16 differs
    assert keras_lfr.models.to_float32(reference) is reference
    # trainers.evaluate loads a mixed-precision .keras model as its float32 copy.
    path = tmp_path / "mixed.keras"
    keras_lfr.wrap(mixed, method="standard").save(path)
    loaded = evaluating.load_model(evaluating.EvalConfig(model=str(path)))
    np.testing.assert_array_equal(loaded(x), reference(x))


def test_preact_resnet18_has_the_resnet18_shape_and_trains_with_a_method():
    net = keras_lfr.models.preact_resnet18(width=4)
    assert net.input_shape == (None, 32, 32, 3) and net.output_shape == (None, 10)
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    # Stem, 2 convolutions in each of 8 blocks, 3 projection shortcuts.
    assert len(convs) == 1 + 16 + 3
    assert net.get_layer("stage4_block2_add").output.shape[1:] == (4, 4, 32)
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    robust = keras_lfr.wrap(net, method="pgd_at", epsilon=8 / 255, step_size=2 / 255, steps=1)
    robust.compile(optimizer="sgd")
    history = robust.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    with pytest.raises(ValueError, match="width=0"):
        keras_lfr.models.preact_resnet18(width=0)
    bf16 = keras_lfr.models.preact_resnet18(width=2, dtype="mixed_bfloat16")
    assert bf16.output.dtype == "float32"


ACTIVATION_ORACLES = {
    "relu": lambda z: np.maximum(z, 0.0),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "gelu": lambda z: 0.5 * z * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z / (1.0 + np.exp(-z)),
}


@pytest.mark.parametrize("activation", keras_lfr.models.ACTIVATIONS)
def test_small_cnn_activation_is_applied_after_every_hidden_layer(activation):
    cnn = keras_lfr.models.small_cnn(dropout=0.0, activation=activation)
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    conv1 = cnn.get_layer("conv1")
    kernel, bias = (np.asarray(w) for w in conv1.weights)
    # conv1 by hand: a 3×3 valid correlation, then the activation's formula.
    patches = np.lib.stride_tricks.sliding_window_view(x[..., 0], (3, 3), axis=(1, 2))
    pre = np.einsum("bhwij,ijo->bhwo", patches, kernel[:, :, 0, :]) + bias
    out = keras.Model(cnn.input, conv1.output)(x)
    # keras' gelu is exact (erf); the tanh form is within 1e-3 of it.
    np.testing.assert_allclose(out, ACTIVATION_ORACLES[activation](pre), atol=1e-3, rtol=1e-3)
    hidden = [cnn.get_layer(n).activation.__name__ for n in ("conv2", "conv3", "conv4", "fc1")]
    assert hidden == [activation] * 4
    assert cnn.get_layer("fc3").activation.__name__ == "linear"  # logits


@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_preact_resnet18_takes_an_activation(activation):
    net = keras_lfr.models.preact_resnet18(width=2, activation=activation)
    used = {layer.activation.__name__ for layer in net.layers if "_relu" in layer.name}
    assert used == {activation}
    assert net.get_layer("final_relu").activation.__name__ == activation


@pytest.mark.parametrize("builder", [keras_lfr.models.small_cnn, keras_lfr.models.preact_resnet18])
def test_unknown_activation_is_a_clear_error(builder):
    with pytest.raises(ValueError, match=r"activation='tanh'.*'relu', 'softplus', 'gelu', 'silu'"):
        builder(activation="tanh")


# The LFR paper's Table 1 row for this model, measured with the authors' code
# on all 10,000 test images (docs/RESULTS.md, calibration).
AUTHORS_TABLE_1 = {"fgsm": 0.9814, "pgd40": 0.9682}


@needs_reference_weights
def test_reference_model_under_the_paper_attacks_matches_the_authors_figures():
    # On the first 1,000 images one image is 0.1 pp and the sampling error of
    # a 97% accuracy is 0.5 pp: 1.5 pp is three of those. A broken attack
    # (no effect, or a wrong step) leaves the clean 99.4%, 1.3 to 2.6 pp away.
    cnn = reference_cnn()
    data = keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=1000, shuffle=False)
    attacks = {
        k: v for k, v in keras_lfr.evaluation.protocol("paper").items() if k in AUTHORS_TABLE_1
    }
    result = keras_lfr.evaluation.robust_accuracy(cnn, data, attacks)
    assert result["clean"] == pytest.approx(0.994, abs=0.002)
    for name, published in AUTHORS_TABLE_1.items():
        assert result[name] == pytest.approx(published, abs=0.015), name
    assert result["pgd40"] < result["fgsm"] < result["clean"]
