"""The SmallCNN and the authors' released weights."""

import numpy as np
import pytest
from conftest import REFERENCE_WEIGHTS

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


def test_reference_weights_load_and_classify_mnist():
    cnn = reference_cnn()
    x, y = next(
        iter(keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=500, download=False))
    )
    accuracy = np.mean(np.argmax(cnn.predict(x, verbose=0), axis=1) == y.numpy())
    assert accuracy > 0.98


def test_local_flatness_grows_with_epsilon_on_the_reference_model():
    cnn = reference_cnn()
    x, y = next(
        iter(keras_lfr.data.load("mnist", "test", batch_size=64, num_examples=64, download=False))
    )
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
    with np.load(REFERENCE_WEIGHTS) as reference:
        arrays = {key: reference[key] for key in reference.files}
    arrays["fc3/kernel"] = np.zeros((3, 3))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="Shape mismatch for 'fc3/kernel'"):
        keras_lfr.models.load_weights_npz(keras_lfr.models.small_cnn(), path)


def test_to_float32_computes_the_weights_function_exactly(tmp_path):
    import keras

    from trainers import evaluate

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
    loaded = evaluate.load_model(evaluate.EvalConfig(model=str(path)))
    np.testing.assert_array_equal(loaded(x), reference(x))
