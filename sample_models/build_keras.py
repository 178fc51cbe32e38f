"""Build a real Keras model exported by tf2onnx, the kind of file robaudit must read as users ship it.

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu tf2onnx onnxruntime
    /tmp/tf/bin/python sample_models/build_keras.py

(TensorFlow is not one of robaudit's dependencies, hence its own environment; the script needs numpy
and robaudit's data module only, not torch.) Trains a small Keras CNN (channels-last input, softmax
output, as Keras models are) on the bundled MNIST test images 0-7999, like build.py, with seeded,
deterministic ops, and exports it with Keras' own ONNX export (which runs tf2onnx; opset 13) to mnist_keras.onnx. Its accuracy on
images 8000-9999 (mnist_holdout.npz), computed by Keras and by ONNX Runtime, goes to
BUILD_INFO_keras.json with the versions, the file's sha256 and a digest of its weights, for the
tests to check robaudit against. A rebuild reproduces the weights (the digest) but not always the
file's bytes: tf2onnx numbers some generated constants differently from run to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # the same float results on every CPU

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from robaudit.data.mnist import open_mnist  # noqa: E402

SEED = 0
N_TRAIN = 8000
EPOCHS = 4
BATCH = 64
OUT = HERE / "mnist_keras.onnx"


def weights_digest(proto: onnx.ModelProto) -> str:
    """A digest of the graph's initializers that ignores their names. A rebuild reproduces the weights
    bit for bit, but tf2onnx numbers some generated constants differently from run to run, so the
    file's own sha256 can change while this digest does not."""
    arrays = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    parts = sorted(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes() for a in arrays)
    return hashlib.sha256(b"".join(parts)).hexdigest()


def main() -> None:
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    mnist = open_mnist()
    images = mnist.read(np.arange(len(mnist))).astype(np.float32)[..., None] / 255.0  # NHWC
    labels = mnist.labels
    x_train, y_train = images[:N_TRAIN], labels[:N_TRAIN]
    x_hold, y_hold = images[N_TRAIN:], labels[N_TRAIN:]

    keras = tf.keras
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1), name="input"),
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    keras_pred = model.predict(x_hold, batch_size=500, verbose=0).argmax(1)

    # Keras 3's own ONNX export, which runs tf2onnx on the model's serving function.
    model.export(str(OUT), format="onnx", verbose=False, opset_version=13)
    session = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    ort_pred = session.run(None, {session.get_inputs()[0].name: x_hold})[0].argmax(1)

    info = {
        "seed": SEED,
        "train_images": f"MNIST test 0-{N_TRAIN - 1}",
        "holdout_images": f"MNIST test {N_TRAIN}-9999 (mnist_holdout.npz)",
        "epochs": EPOCHS,
        "exporter": f"keras {keras.__version__} Model.export(format='onnx'), tf2onnx {tf2onnx.__version__}, opset 13",
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
        "holdout_accuracy": {
            "keras": float((keras_pred == y_hold).mean()),
            "onnxruntime": float((ort_pred == y_hold).mean()),
        },
        "holdout_predictions_differing": int((keras_pred != ort_pred).sum()),
        "sha256": {OUT.name: hashlib.sha256(OUT.read_bytes()).hexdigest()},
        "weights_sha256": weights_digest(onnx.load(str(OUT))),
    }
    (HERE / "BUILD_INFO_keras.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info["holdout_accuracy"]), info["holdout_predictions_differing"], "predictions differ")


if __name__ == "__main__":
    main()
