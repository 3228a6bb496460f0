"""Loads a SavedModel in a fresh process and prints its logits as JSON."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

path, inputs = sys.argv[1], sys.argv[2]
serving = tf.saved_model.load(path).signatures["serving_default"]
outputs = serving(images=tf.constant(np.load(inputs)))
print(json.dumps({"keys": sorted(outputs), "logits": outputs["logits"].numpy().tolist()}))
