"""Architectures: the LFR paper's SmallCNN, and a pre-activation ResNet-18 for 32×32×3 images."""

import math

import keras
import numpy as np

# The hidden-layer nonlinearities a model may use. Input-gradient penalties
# (LFR, LLR) train better with smooth ones: ReLU's second derivative is zero
# almost everywhere, so double backprop sees no curvature.
ACTIVATIONS = ("relu", "softplus", "gelu", "silu")


def _activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"Invalid value for argument `activation`. Received: activation={activation!r}. "
            f"Expected one of {list(ACTIVATIONS)}."
        )
    return activation


def _torch_linear_init(fan_in):
    """PyTorch's default `nn.Linear` initialisation, U(-1/√fan_in, 1/√fan_in)."""
    limit = 1.0 / math.sqrt(fan_in)
    return (
        keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        keras.initializers.RandomUniform(-limit, limit),
    )


def small_cnn(
    input_shape=(28, 28, 1),
    num_classes=10,
    dropout=0.5,
    activation="relu",
    dtype=None,
    name="small_cnn",
):
    """The SmallCNN of TRADES and LFR for MNIST, returning logits.

    conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10 with ReLU (or
    another `activation`) and 3×3
    valid convolutions. Layer names are `conv1`…`conv4` and `fc1`…`fc3`, so
    weights stored by layer name (such as the authors' released model, see
    `load_weights_npz`) load directly. Initialisation follows the authors:
    Kaiming-normal convolutions with zero biases, PyTorch's default for
    `fc1`/`fc2`, and an all-zero last layer.

    Args:
        input_shape: Shape of one image, NHWC. Defaults to `(28, 28, 1)`.
        num_classes: Number of logits. Defaults to `10`.
        dropout: Dropout rate after `fc1` (TRADES' SmallCNN uses 0.5); `0`
            disables it. Defaults to `0.5`.
        activation: Nonlinearity of the hidden layers: `"relu"` (the
            paper's), `"softplus"`, `"gelu"` or `"silu"`. Defaults to
            `"relu"`.
        dtype: A dtype policy for the layers, e.g. `"mixed_bfloat16"`; the
            logits are then cast to float32 by a final `logits` layer.
            Defaults to `None` (the global policy).
        name: Model name. Defaults to `"small_cnn"`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: If `dropout` or `activation` is invalid.

    Example:

    >>> cnn = keras_lfr.models.small_cnn(activation="silu")
    >>> cnn.output_shape
    (None, 10)
    """
    if not 0 <= dropout < 1:
        raise ValueError(
            f"Invalid value for argument `dropout`. Received: dropout={dropout!r}. "
            "Expected a float in [0, 1)."
        )
    activation = _activation(activation)
    layers = keras.layers
    conv_init = keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")

    def conv(filters, layer_name):
        return layers.Conv2D(
            filters,
            3,
            activation=activation,
            kernel_initializer=conv_init,
            name=layer_name,
            dtype=dtype,
        )

    def hidden(x, layer_name):
        kernel, bias = _torch_linear_init(x.shape[-1])
        return layers.Dense(
            200,
            activation=activation,
            kernel_initializer=kernel,
            bias_initializer=bias,
            name=layer_name,
            dtype=dtype,
        )(x)

    inputs = keras.Input(input_shape, name="images")
    x = conv(32, "conv1")(inputs)
    x = conv(32, "conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1", dtype=dtype)(x)
    x = conv(64, "conv3")(x)
    x = conv(64, "conv4")(x)
    x = layers.MaxPooling2D(2, name="pool2", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    x = hidden(x, "fc1")
    if dropout:
        x = layers.Dropout(dropout, name="dropout", dtype=dtype)(x)
    x = hidden(x, "fc2")
    outputs = layers.Dense(num_classes, kernel_initializer="zeros", name="fc3", dtype=dtype)(x)
    if dtype is not None:
        # Mixed precision: logits leave the model in float32 (losses, attacks, serving).
        outputs = layers.Activation("linear", dtype="float32", name="logits")(outputs)
    return keras.Model(inputs, outputs, name=name)


def preact_resnet18(
    input_shape=(32, 32, 3),
    num_classes=10,
    width=64,
    activation="relu",
    dtype=None,
    name="preact_resnet18",
):
    """Pre-activation ResNet-18 (He et al., ECCV 2016), the usual CIFAR-10 robust baseline.

    A 3×3 stem, four stages of two pre-activation basic blocks (BatchNorm,
    ReLU, 3×3 convolution, twice; 1×1 projection shortcuts where the shape
    changes) with `width`, 2·, 4· and 8·`width` filters and strides 1, 2, 2,
    2, then BatchNorm, ReLU, global average pooling and a dense layer of
    logits. The architecture of Rice et al. (2020) and of many adversarial
    training papers on CIFAR-10.

    Args:
        input_shape: Shape of one image, NHWC. Defaults to `(32, 32, 3)`.
        num_classes: Number of logits. Defaults to `10`.
        width: Filters of the first stage (64 is ResNet-18; smaller values
            make a cheap model of the same shape). Defaults to `64`.
        activation: Nonlinearity after each BatchNorm: `"relu"`,
            `"softplus"`, `"gelu"` or `"silu"`. Defaults to `"relu"`.
        dtype: A dtype policy for the layers, e.g. `"mixed_bfloat16"`; the
            logits are then cast to float32. Defaults to `None`.
        name: Model name. Defaults to `"preact_resnet18"`.

    Returns:
        A functional `keras.Model` (with BatchNorm: `training` matters).

    Raises:
        ValueError: If `width` or `activation` is invalid.

    Example:

    >>> net = keras_lfr.models.preact_resnet18(width=16)
    >>> net.output_shape
    (None, 10)
    """
    if int(width) < 1:
        raise ValueError(
            f"Invalid value for argument `width`. Received: width={width!r}. "
            "Expected a positive integer."
        )
    activation = _activation(activation)
    layers = keras.layers

    def conv(filters, size, stride, layer_name):
        return layers.Conv2D(
            filters, size, stride, padding="same", use_bias=False, name=layer_name, dtype=dtype
        )

    def block(x, filters, stride, block_name):
        out = layers.BatchNormalization(name=f"{block_name}_bn1", dtype=dtype)(x)
        out = layers.Activation(activation, name=f"{block_name}_relu1", dtype=dtype)(out)
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = conv(filters, 1, stride, f"{block_name}_shortcut")(out)
        out = conv(filters, 3, stride, f"{block_name}_conv1")(out)
        out = layers.BatchNormalization(name=f"{block_name}_bn2", dtype=dtype)(out)
        out = layers.Activation(activation, name=f"{block_name}_relu2", dtype=dtype)(out)
        out = conv(filters, 3, 1, f"{block_name}_conv2")(out)
        return layers.Add(name=f"{block_name}_add", dtype=dtype)([out, shortcut])

    inputs = keras.Input(input_shape, name="images")
    x = conv(width, 3, 1, "stem")(inputs)
    for stage, (multiple, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        x = block(x, width * multiple, stride, f"stage{stage}_block1")
        x = block(x, width * multiple, 1, f"stage{stage}_block2")
    x = layers.BatchNormalization(name="final_bn", dtype=dtype)(x)
    x = layers.Activation(activation, name="final_relu", dtype=dtype)(x)
    x = layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    outputs = layers.Dense(num_classes, name="fc", dtype=dtype)(x)
    if dtype is not None:
        outputs = layers.Activation("linear", dtype="float32", name="logits")(outputs)
    return keras.Model(inputs, outputs, name=name)


def load_weights_npz(model, path):
    """Loads `<layer>/kernel` and `<layer>/bias` arrays from an `.npz` by layer name.

    Args:
        model: A Keras model whose layers are named as the file's keys.
        path: Path to the `.npz` file, e.g. the authors' released SmallCNN.

    Returns:
        The model, with its weights replaced.

    Raises:
        ValueError: If a key names no layer of the model, a layer with
            weights has no key, or a shape differs.

    Example:

    >>> cnn = keras_lfr.models.load_weights_npz(
    ...     keras_lfr.models.small_cnn(), "lfr_official_mnist_smallcnn.npz")
    """
    with np.load(path) as arrays:
        stored = {key: arrays[key] for key in arrays.files}
    names = {layer.name for layer in model.layers}
    unknown = sorted(key for key in stored if key.split("/")[0] not in names)
    if unknown:
        raise ValueError(
            f"The weights file '{path}' has keys {unknown} that name no layer of "
            f"model {model.name!r} (layers: {sorted(names)})."
        )
    for layer in model.layers:
        if not layer.weights:
            continue
        keys = [f"{layer.name}/{w.name}" for w in layer.weights]
        missing = [key for key in keys if key not in stored]
        if missing:
            raise ValueError(f"The weights file '{path}' has no arrays {missing}.")
        for weight, key in zip(layer.weights, keys, strict=True):
            if tuple(weight.shape) != stored[key].shape:
                raise ValueError(
                    f"Shape mismatch for {key!r}: the model expects "
                    f"{tuple(weight.shape)}, the file '{path}' has {stored[key].shape}."
                )
            weight.assign(stored[key])
    return model


def to_float32(model):
    """Returns `model` computing in float32: itself, or a float32 copy with its weights.

    A model trained with a mixed policy (e.g. `"mixed_bfloat16"`) keeps float32
    weights but computes in bfloat16; attacks on it would then run on
    bfloat16 logits and gradients. Evaluate the float32 copy instead, so that
    robustness is measured on the exact function the weights define. The copy
    is made with `keras.models.clone_model` (functional and Sequential models).

    Args:
        model: A Keras model.

    Returns:
        `model` if every layer computes in float32, else a float32 clone with
        the same weights.

    Example:

    >>> evaluated = keras_lfr.models.to_float32(keras.models.load_model(path).unwrap())
    """

    def compute_dtype(layer):
        return getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")

    if all(compute_dtype(layer) == "float32" for layer in model._flatten_layers()):
        return model

    def float32_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy


def bfloat16_copy(model):
    """Returns a copy of `model` that computes in bfloat16, with the same float32 weights.

    Every layer of the copy has the `"mixed_bfloat16"` dtype policy: its
    weights are float32 variables holding the original's values exactly,
    cast to bfloat16 at each call, and it computes (and returns its outputs)
    in bfloat16. The mixed-precision evaluation
    (`keras_lfr.evaluation.robust_accuracy(..., precision="mixed")`) runs
    the search of every attack but Square on such a copy and judges what
    they find on the original. The copy is made with
    `keras.models.clone_model`, so `model` must be a functional or
    Sequential model (a `RobustModel` is unwrapped).
    Its weights are copied once: after the original's change (training),
    copy them again, e.g. `copy.set_weights(model.get_weights())`.

    Args:
        model: A functional or Sequential Keras model, or a
            `keras_lfr.RobustModel` wrapping one.

    Returns:
        A new functional or Sequential model with the same weights, in the
        same order as `model.weights`, computing in bfloat16.

    Raises:
        ValueError: If `model` cannot be cloned (a subclassed model, a
            SavedModel layer, a plain function).

    Example:

    >>> fast = keras_lfr.models.bfloat16_copy(cnn)
    >>> fast(x).dtype  # bfloat16 logits; cast them before a loss
    """
    unwrap = getattr(model, "unwrap", None)
    source = unwrap() if callable(unwrap) else model

    def bfloat16_layer(layer):
        config = layer.get_config()
        config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(source, clone_function=bfloat16_layer)
    except Exception as error:  # clone_model raises ValueError or TypeError by model kind
        raise ValueError(
            f"Invalid value for argument `model`. Received: model={model!r}, which "
            f"keras.models.clone_model cannot copy ({type(error).__name__}: {error}). "
            "Expected a functional or Sequential Keras model: a bfloat16 copy needs "
            "one (evaluate others with precision='float32')."
        ) from error
    copy.set_weights(source.get_weights())
    return copy
