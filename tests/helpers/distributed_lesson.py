"""Kaggle's GPU notebook on the CPU: the whole lesson for every precision on 1 and on 2 devices.

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 python distributed_lesson.py WORKDIR
    KERAS_BACKEND=tensorflow python distributed_lesson.py WORKDIR      # two logical CPUs, set below

A Kaggle notebook on two T4s runs `mixed_precision="auto"` → mixed_float16 and `devices="auto"` →
both GPUs. Each cell of the matrix (policy × devices) runs the lesson as a user would: fit twice on
precomputed activations, lr_find, fit again, precompute off and an augmented fit, unfreeze,
differential-rate SGDR, predict, TTA, save/load and predict after load, then `kit train` stopped by
a real SIGINT after its first epoch and `--resume`d. Two virtual devices must exist before the
backend starts, hence a process of its own; it prints one JSON object on its last line
(tests/test_distribute.py asserts on it).
"""

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from helpers.images import make_folders  # noqa: E402
from helpers.tiny import tiny  # noqa: E402
from kit.cli import main as kit_main  # noqa: E402
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on  # noqa: E402
from kit.jobs import train as train_job  # noqa: E402
from kit.models.archs import ARCHS  # noqa: E402
from kit.training.callbacks.checkpoint import EpochCheckpoint, read_checkpoint  # noqa: E402
from kit.training.learner import ConvLearner  # noqa: E402

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
DEVICES = (1, 2)
SZ, BS = 32, 8
WORK = Path(sys.argv[1])
FOLDER = make_folders(WORK / "data" / "tiny", classes=("cats", "dogs"), n_train=16, n_valid=8, n_test=5)
ARCHS["tiny"] = tiny  # `kit train --arch tiny` in this process
out: dict = {"backend": BACKEND, "cells": {}}
t0 = time.perf_counter()


# ----------------------------------------------------------------------------- where Keras ran
def in_distribution() -> bool:
    """Whether the caller runs inside a data-parallel scope (the JAX distribution, a TF strategy)."""
    if BACKEND == "jax":
        return keras.distribution.distribution() is not None
    return tf.distribute.has_strategy()


CALLS: list[bool] = []  # one entry per Keras fit / predict / load call: was it inside the scope?


def _recording(name: str):
    original = getattr(keras.Model, name)

    def wrapper(self, *args, **kwargs):
        CALLS.append(in_distribution())
        return original(self, *args, **kwargs)

    return wrapper


for _name in ("fit", "predict", "predict_on_batch", "load_weights"):
    setattr(keras.Model, _name, _recording(_name))


def scoped(record: dict, name: str, call):
    """Runs `call()` and records whether every Keras call it made ran inside the devices' scope."""
    CALLS.clear()
    result = call()
    record[name] = bool(CALLS) and all(CALLS)
    return result


# ----------------------------------------------------------------------------- the lesson
def learner(policy: str, devices: int, precompute: bool = True, aug: bool = False, bag: int = 1) -> ConvLearner:
    for f in (FOLDER / "tmp").glob("act_*.npy"):
        f.unlink()  # every learner computes its activations on its own devices and in its own dtype
    keras.utils.set_random_seed(0)
    tfms = tfms_from_model(tiny, SZ, aug_tfms=transforms_side_on if aug else None)
    data = ImageClassifierData.from_paths(FOLDER, tfms=tfms, bs=BS, test_name="test", progress=False, num_workers=1)
    # No dropout: MirroredStrategy's replicas draw their own masks, so only then is the history
    # of N devices that of one (JAX draws one mask for the global batch either way).
    return ConvLearner.pretrained(
        tiny, data, precompute=precompute, weights=None, ps=0.0, devices=devices, mixed_precision=policy, bag=bag
    )


def weights(learn: ConvLearner) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in learn.model.weights]


def finite(*arrays) -> bool:
    return all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays)


def placement_facts(learn: ConvLearner) -> dict:
    facts = {"devices": learn.placement.names, "replicas": learn.placement.num_replicas, "line": learn.device_line}
    v = learn.model.trainable_weights[0]
    if BACKEND == "jax":
        s = v.value.sharding
        facts.update(var_devices=len(s.device_set), var_replicated=bool(s.is_fully_replicated))
        if learn.placement.engine is not None:
            x = keras.distribution.distribute_tensor(
                np.zeros((BS, SZ, SZ, 3), "uint8"), learn.placement.engine.get_data_layout((BS, SZ, SZ, 3))
            )
            facts["batch_rows_per_device"] = sorted({int(sh.data.shape[0]) for sh in x.addressable_shards})
    else:
        values = getattr(v.value, "values", None)
        facts.update(
            var_devices=len(values) if values is not None else 1, var_replicated=values is not None and len(values) > 1
        )
    return facts


def dtype_facts(learn: ConvLearner) -> dict:
    convs = [l for l in learn.backbone.layers if isinstance(l, keras.layers.Conv2D)]
    dense = [l for l in learn.head.layers if isinstance(l, keras.layers.Dense)]
    return {
        "policy": learn.mixed_precision,
        "body_compute": convs[0].compute_dtype,
        "body_variable": convs[0].variable_dtype,
        "hidden_compute": dense[0].compute_dtype,
        "logits_compute": dense[-1].compute_dtype,
        "output_dtype": str(keras.backend.standardize_dtype(learn.model.output.dtype)),
    }


def lesson(policy: str, devices: int) -> dict:
    cell: dict = {"scope": {}}
    sc = cell["scope"]
    learn = scoped(sc, "pretrained", lambda: learner(policy, devices))
    cell.update(placement_facts(learn), dtypes=dtype_facts(learn))
    fits = [scoped(sc, "fit", lambda: learn.fit(0.01, 1, verbose=False)), learn.fit(0.01, 1, verbose=False)]
    before = weights(learn)
    suggestion = scoped(sc, "lr_find", lambda: learn.lr_find(num_it=12))
    cell["lr_find"] = {
        "points": len(learn.sched.lrs),
        "finite_losses": int(np.isfinite(learn.sched.losses).sum()),
        "suggestion_finite": bool(np.isfinite(suggestion)),
        "restored": all(np.array_equal(a, b) for a, b in zip(before, weights(learn))),
    }
    cell["optimizer"] = type(learn.head.optimizer).__name__
    cell["opt_paths"] = [v.path.split("/")[-1] for v in learn.head.optimizer.variables]
    fits.append(learn.fit(0.01, 1, verbose=False))  # after lr_find: the optimizer reset that crashed under fp16
    for f in (FOLDER / "tmp").glob("act_*.npy"):
        f.unlink()
    scoped(sc, "precompute", lambda: setattr(learn, "precompute", True))  # the body runs again: no cache
    learn.precompute = False
    fits.append(learn.fit(0.01, 1, verbose=False))  # the head on images through the whole model
    learn.unfreeze()
    fits.append(
        learn.fit(np.array([1e-4, 3e-4, 1e-3]), 2, cycle_len=1, verbose=False)
    )  # 2 cycles of 1 epoch: a warm restart
    cell["history"] = list(learn.history)
    log_preds = scoped(sc, "predict", learn.predict)
    test_preds = learn.predict(is_test=True)
    tta, _ = scoped(sc, "TTA", lambda: learn.TTA(n_aug=2))
    files, ok = scoped(sc, "predict_files", lambda: learn.predict_files(learn.data.val_files[:3]))
    interp = scoped(sc, "interpret", learn.interpret)
    learn.save(f"cell_{policy}_{devices}")
    learn.fit(1e-3, 1, verbose=False)  # move the weights, so that load has something to undo
    scoped(sc, "load", lambda: learn.load(f"cell_{policy}_{devices}"))
    after = learn.predict()
    cell.update(
        fits=fits,
        finite=finite([f for pair in fits for f in pair], log_preds, test_preds, tta, files[ok], interp.probs),
        predict_shape=list(log_preds.shape),
        test_shape=list(test_preds.shape),
        tta_shape=list(tta.shape),
        load_max_diff=float(np.abs(after - log_preds).max()),
        predict=log_preds.tolist(),
    )
    cell["bag"] = bag_of_heads(policy, devices)
    return cell


def bag_of_heads(policy: str, devices: int) -> dict:
    """A bag of 2 heads, each fit on its own (`member`), then predicted on activations, images and with TTA."""
    learn = learner(policy, devices, bag=2)
    fits, firsts = [], []
    for i in range(2):
        with learn.member(i):
            fits.append(learn.fit(0.01, 1, verbose=False))
            firsts.append(learn.predict())  # member 0 alone, then the bag of both
    on_acts = learn.predict()
    learn.precompute = False
    on_images = learn.predict()
    tta, _ = learn.TTA(n_aug=1)
    return {
        "epochs": [r["epoch"] for r in learn.history],
        "finite": finite(fits, on_acts, on_images, tta, firsts),
        "sums_to_one": bool(np.allclose(np.exp(on_acts).sum(axis=1), 1.0, atol=1e-3)),
        "member_0_differs": bool(np.abs(firsts[0] - on_acts).max() > 1e-6),
        "bag_is_the_last_member_view": float(np.abs(firsts[1] - on_acts).max()),
        "images_vs_activations": float(np.abs(np.exp(on_images) - np.exp(on_acts)).max()),
        "predict": on_acts.tolist(),
    }


# ----------------------------------------------------------------------------- kit train, stopped and resumed
class SigintAfterFirstEpoch(EpochCheckpoint):
    """Sends this process a real SIGINT (Ctrl-C) once the first epoch's checkpoint is on disk."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.last_epoch == 0:
            signal.raise_signal(signal.SIGINT)


def cli(work: Path, *args: str) -> tuple[int, str, str]:
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = kit_main(
            [
                "train",
                "--folder",
                str(FOLDER),
                "--work-dir",
                str(work),
                "--arch",
                "tiny",
                "--weights",
                "none",
                "--size",
                str(SZ),
                "--bs",
                str(BS),
                "--epochs",
                "1",
                "--lr",
                "0.01",
                "--unfreeze-epochs",
                "1",
                "--config",
                str(CONFIG),
                *args,
            ]
        )
    return rc, o.getvalue(), e.getvalue()


def train_resumed(policy: str, devices: int, opt_paths: list[str]) -> dict:
    work = WORK / f"train_{policy}_{devices}"
    flags = ("--devices", str(devices), "--mixed-precision", policy)
    train_job.EpochCheckpoint = SigintAfterFirstEpoch
    try:
        rc1, _, err1 = cli(work, *flags)
    finally:
        train_job.EpochCheckpoint = EpochCheckpoint
    runs = work / "runs"
    (stopped,) = [p for p in runs.iterdir() if p.is_dir()]
    opt_at_stop = read_checkpoint(stopped / "checkpoint")["optimizer"]
    rc2, stdout, err2 = cli(work, "--resume")
    config = json.loads((stopped / "config.json").read_text())
    history = (
        json.loads((stopped / "history.json").read_text())["history"] if (stopped / "history.json").is_file() else []
    )
    opt_at_end = read_checkpoint(stopped / "checkpoint")["optimizer"]
    return {
        "interrupted_rc": rc1,
        "interrupted_stderr": err1[-1500:],
        "resumed_rc": rc2,
        "resumed_stderr": err2[-1500:],
        "line": stdout.strip().splitlines()[0] if stdout.strip() else "",
        "resolved": config.get("resolved"),
        "epochs": [r["epoch"] for r in history],
        "finite": finite([[r["trn_loss"], r["val_loss"]] for r in history]),
        "finished": (stopped / "DONE").exists(),
        "opt_values": len(opt_at_end),
        # The loss scale (mixed_float16 only) in the checkpoint the resume started from.
        # (`opt_paths`: the variables of the head's optimizer in the lesson, which kit train's first stage also fits)
        "loss_scale_at_stop": float(opt_at_stop[opt_paths.index("dynamic_scale")])
        if policy == "mixed_float16"
        else None,
    }


CONFIG = WORK / "train.json"
# head_min_steps 0: the lesson's few steps a cell (this checks placement and resume in each cell). With the
# default floor a 32-photo head fits 300 steps at the fixed --lr 0.01, which the tiny random-weight body's raw
# features do not survive under mixed_float16 on 2 devices (the divergence guard stops it).
CONFIG.write_text('{"tta": false, "num_workers": 1, "head_min_steps": 0}')

# First, because on TensorFlow the first learner of a process trains a little differently from the
# later ones (devices or not), which would blur the comparison of 1 and 2 devices below.
head = learner("float32", 2)
head.lr_find(num_it=12)

for policy in POLICIES:
    for devices in DEVICES:
        t = time.perf_counter()
        cell = lesson(policy, devices)
        cell["train"] = train_resumed(policy, devices, cell["opt_paths"])
        cell["seconds"] = round(time.perf_counter() - t, 1)
        out["cells"][f"{policy}/{devices}"] = cell

# Weights move between device counts: saved on 2, loaded on 1, and back (float32).
one, two = learner("float32", 1), learner("float32", 2)
two.fit(0.01, 1, verbose=False)
two.save("two_devices")
one.load("two_devices")
out["load_2_on_1_max_diff"] = float(np.abs(one.predict() - two.predict()).max())
one.fit(1e-3, 1, verbose=False)
one.save("one_device")
two.load("one_device")
out["load_1_on_2_max_diff"] = float(np.abs(two.predict() - one.predict()).max())

rc, _, stderr = cli(WORK / "too_many", "--devices", "3")
out["cli_too_many"] = {"rc": rc, "stderr": stderr[-2000:]}
out["seconds"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out))
