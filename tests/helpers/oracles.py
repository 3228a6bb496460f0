"""Tools of the oracle tests: a numpy twin of a small ReLU CNN, and a loop that records.

`ConvNet` is the Keras model `keras_model` builds (a valid 3×3 convolution
with ReLU, flattened in height, width, channel order, then a dense layer to
the logits) written out in numpy, float64, with its input gradients derived
by hand: it shares no code with keras_lfr, so that a test can recompute an
attack or a training objective independently.

`recording_iterate` stands in for `keras_lfr.ops.iterate` (the loop every
attack runs) and keeps the state after each iteration, so that an attack can
be compared with its reference step by step.
"""

import numpy as np


def keras_model(input_shape=(6, 6, 1), filters=3, classes=4, name="tiny_relu_cnn"):
    """The Keras twin of `ConvNet`: Conv2D(3×3, ReLU) → Flatten → Dense(classes)."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(filters, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(classes),
        ],
        name=name,
    )


def random_weights(rng, input_shape=(6, 6, 1), filters=3, classes=4):
    """Float32 weights `[kernel, bias, dense, dense_bias]` for `keras_model`."""
    height, width, channels = input_shape
    features = (height - 2) * (width - 2) * filters
    return [
        rng.normal(0.0, 0.5, (3, 3, channels, filters)).astype("float32"),
        rng.normal(0.0, 0.1, filters).astype("float32"),
        rng.normal(0.0, 0.5, (features, classes)).astype("float32"),
        rng.normal(0.0, 0.1, classes).astype("float32"),
    ]


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    return np.exp(log_softmax(logits))


def cross_entropy(logits, labels):
    """Per-example −log softmax(logits)[label]."""
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def one_hot(labels, classes):
    return np.eye(classes)[labels]


class ConvNet:
    """logits = flatten(relu(conv3×3(x) + b)) · W + c, in float64.

    Args:
        weights: `[kernel (3, 3, in, filters), bias (filters,), dense
            (features, classes), dense_bias (classes,)]`, Keras' layout.
    """

    def __init__(self, weights):
        self.kernel, self.bias, self.dense, self.dense_bias = (
            np.asarray(w, dtype=np.float64) for w in weights
        )

    def preactivations(self, x):
        """The convolution's output before the ReLU, `(batch, h − 2, w − 2, filters)`."""
        x = np.asarray(x, dtype=np.float64)
        height, width = x.shape[1] - 2, x.shape[2] - 2
        out = np.zeros((len(x), height, width, self.kernel.shape[-1]))
        for di in range(3):
            for dj in range(3):
                patch = x[:, di : di + height, dj : dj + width, :]
                out += np.einsum("bhwc,cf->bhwf", patch, self.kernel[di, dj])
        return out + self.bias

    def features(self, x):
        """The penultimate representation: the flattened ReLU outputs."""
        hidden = np.maximum(self.preactivations(x), 0.0)
        return hidden.reshape(len(hidden), -1)

    def logits(self, x):
        return self.features(x) @ self.dense + self.dense_bias

    def input_gradient(self, x, upstream):
        """∇ₓ Σᵢ ⟨upstreamᵢ, logits(x)ᵢ⟩, per example: a vector-Jacobian product.

        With `upstream = softmax(logits) − one_hot(labels)` it is the gradient of
        each example's cross-entropy with respect to its own input.
        """
        x = np.asarray(x, dtype=np.float64)
        pre = self.preactivations(x)
        d_hidden = (upstream @ self.dense.T).reshape(pre.shape) * (pre > 0)
        height, width = pre.shape[1], pre.shape[2]
        grad = np.zeros_like(x)
        for di in range(3):
            for dj in range(3):
                grad[:, di : di + height, dj : dj + width, :] += np.einsum(
                    "bhwf,cf->bhwc", d_hidden, self.kernel[di, dj]
                )
        return grad

    def ce_input_gradient(self, x, labels):
        """∇ₓ CE(f(x), y) per example, and the logits."""
        logits = self.logits(x)
        upstream = softmax(logits) - one_hot(labels, logits.shape[1])
        return self.input_gradient(x, upstream), logits

    def kink_margin(self, *inputs):
        """The smallest |pre-activation| of any ReLU at any of `inputs`: how far from a kink."""
        return min(float(np.abs(self.preactivations(x)).min()) for x in inputs)


def recording_iterate(trace):
    """A drop-in `keras_lfr.ops.iterate` that runs eagerly and appends each run's states to `trace`.

    Each call appends a list holding, after every iteration, the state with
    its tensors converted to numpy (a dict stays a dict, a tuple a tuple).
    """
    import keras

    def to_numpy(state):
        if isinstance(state, dict):
            return {key: np.asarray(value) for key, value in state.items()}
        if isinstance(state, (tuple, list)):
            return tuple(np.asarray(value) for value in state)
        return np.asarray(state)

    def iterate(body, state, steps, *, first=0, active=None):
        states = []
        for i in range(first, first + steps):
            if active is not None and not bool(np.asarray(active(state))):
                break
            state = body(keras.ops.convert_to_tensor(i, "int32"), state)
            states.append(to_numpy(state))
        trace.append(states)
        return state

    return iterate


def classified_problem(seed, batch=12):
    """A ReLU CNN, its numpy twin and a batch it classifies correctly (labels = predictions)."""
    rng = np.random.default_rng(seed)
    weights = random_weights(rng)
    model = keras_model()
    model.set_weights(weights)
    net = ConvNet(weights)
    x = rng.uniform(0.0, 1.0, size=(batch, 6, 6, 1)).astype("float32")
    y = np.argmax(net.logits(x), axis=1).astype("int32")
    return model, net, x, y
