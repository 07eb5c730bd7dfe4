"""The lesson's cells on 1 and on 2 devices; run as a script, prints one JSON object on its last line.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 python distributed_lesson.py WORKDIR
    KERAS_BACKEND=tensorflow python distributed_lesson.py WORKDIR      # two logical CPUs, set below

Two virtual devices must exist before the backend starts, hence a process of its own
(tests/test_distribute.py runs it and asserts on the JSON).
"""
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from helpers.images import make_folders  # noqa: E402
from helpers.tiny import tiny  # noqa: E402
from kit.cli import main as kit_main  # noqa: E402
from kit.data import ImageClassifierData, tfms_from_model  # noqa: E402
from kit.training.learner import ConvLearner  # noqa: E402

SZ, BS = 32, 8
WORK = Path(sys.argv[1])
FOLDER = make_folders(WORK / "data" / "tiny", classes=("cats", "dogs"), n_train=16, n_valid=8, n_test=5)
out: dict = {"backend": BACKEND}
t0 = time.perf_counter()


def learner(devices, precompute: bool = True) -> ConvLearner:
    for f in (FOLDER / "tmp").glob("act_*.npy"):
        f.unlink()  # every learner computes its activations on its own devices
    keras.utils.set_random_seed(0)
    data = ImageClassifierData.from_paths(FOLDER, tfms=tfms_from_model(tiny, SZ), bs=BS, test_name="test", progress=False, num_workers=1)
    # No dropout: MirroredStrategy's replicas draw their own masks, so only then is the history
    # of N devices that of one (JAX draws one mask for the global batch either way).
    return ConvLearner.pretrained(tiny, data, precompute=precompute, weights=None, ps=0.0, devices=devices)


def weights(learn: ConvLearner) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in learn.model.weights]


def lesson(learn: ConvLearner) -> dict:
    """precompute → head epochs → unfreeze → differential rates with SGDR, as the lesson."""
    learn.fit(0.01, 2, verbose=False)
    learn.precompute = False
    learn.unfreeze()
    learn.fit(np.array([1e-4, 3e-4, 1e-3]), 2, cycle_len=1, cycle_mult=2, verbose=False)  # 1 + 2 epochs
    return {"history": list(learn.history)}


def placement_facts(learn: ConvLearner) -> dict:
    facts = {"devices": learn.placement.names, "replicas": learn.placement.num_replicas, "line": learn.device_line}
    v = learn.model.trainable_weights[0]
    if BACKEND == "jax":
        s = v.value.sharding
        facts.update(var_devices=len(s.device_set), var_replicated=bool(s.is_fully_replicated))
        if learn.placement.engine is not None:
            x = keras.distribution.distribute_tensor(np.zeros((BS, SZ, SZ, 3), "uint8"), learn.placement.engine.get_data_layout((BS, SZ, SZ, 3)))
            facts["batch_rows_per_device"] = sorted({int(sh.data.shape[0]) for sh in x.addressable_shards})
    else:
        values = getattr(v.value, "values", None)
        facts.update(var_devices=len(values) if values is not None else 1, var_replicated=values is not None and len(values) > 1)
    return facts


# First, because on TensorFlow the first learner of a process trains a little differently from the
# later ones (devices or not), which would blur the comparison of 1 and 2 devices below.
# lr_find on the head (precomputed activations), on 2 devices: weights restored exactly
head = learner(2)
before = weights(head)
head.lr_find(num_it=12)
out["lr_find_points"] = len(head.sched.lrs)
out["lr_find_restored"] = all(np.array_equal(a, b) for a, b in zip(before, weights(head)))

one = learner(1)
out["one"] = {**placement_facts(one), **lesson(one)}
two = learner(2)
out["two"] = placement_facts(two)
out["two"].update(lesson(two))

# predict, test predict (5 images: an odd last batch), TTA
p1, p2 = one.predict(), two.predict()
out["predict_max_diff"] = float(np.abs(p1 - p2).max())
out["predict_shape"] = list(p2.shape)
out["test_shape"] = list(two.predict(is_test=True).shape)
log_preds, y = two.TTA(n_aug=2)
out["tta_shape"] = list(log_preds.shape)

# save on 2 devices → load on 1, and back
two.save("two_devices")
one.load("two_devices")
out["load_2_on_1_max_diff"] = float(np.abs(one.predict() - p2).max())
one.fit(1e-3, 1, verbose=False)
one.save("one_device")
two.load("one_device")
out["load_1_on_2_max_diff"] = float(np.abs(two.predict() - one.predict()).max())
out["cells_seconds"] = round(time.perf_counter() - t0, 1)


# kit train --devices 2 end to end; --devices 3 refused
def cli(*args: str) -> tuple[int, str, str]:
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = kit_main(["train", "-c", "tiny", "--data-dir", str(WORK / "data"), "--arch", "efficientnet_lite0", "--weights", "none",
                       "--size", str(SZ), "--bs", str(BS), "--epochs", "1", "--lr", "0.01", "--config", str(CONFIG), *args])
    return rc, o.getvalue(), e.getvalue()


CONFIG = WORK / "train.json"
CONFIG.write_text('{"tta": false}')  # the cells above ran TTA; here the run itself is under test
t1 = time.perf_counter()
rc, stdout, stderr = cli("--devices", "2")
runs = FOLDER / "runs"
latest = runs / (runs / "LATEST").read_text().strip() if (runs / "LATEST").is_file() else None
out["cli"] = {"rc": rc, "stdout": stdout[-3000:], "stderr": stderr[-3000:],
              "config": json.loads((latest / "config.json").read_text()) if latest else None,
              "seconds": round(time.perf_counter() - t1, 1)}
rc, stdout, stderr = cli("--devices", "3")
out["cli_too_many"] = {"rc": rc, "stderr": stderr[-2000:]}
print(json.dumps(out))
