"""`ConvLearner`: a pretrained body, the lesson's head, and fit / lr_find / predict / TTA over Keras.

Underneath are ordinary Keras models: `learn.model` (uint8 images → log-probabilities, augmentation
active only while training), `learn.body`, `learn.head` (a bag of `learn.members` heads when built with
`bag=N`, each trained on its own inside `learn.member(i)`); `fit` is `keras.Model.fit` with callbacks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm.auto import tqdm

from kit import metrics
from kit.checks import check_choice, check_int
from kit.data.dataset import Batches, ImageClassifierData
from kit.data.images import decode_files
from kit.data.transforms import RandomFlip, RandomZoom, Transforms
from kit.models.archs import Arch, ConcatPool, build_bag, build_body, get_arch, log_mean_exp, split_body_layers
from kit.training.callbacks.divergence import DivergenceGuard
from kit.training.callbacks.lr_range_test import LRRangeTest
from kit.training.callbacks.progress import EpochTable
from kit.training.callbacks.sgdr import SGDR
from kit.training.compilation_cache import enable_compilation_cache
from kit.training.device import default_jit_compile, precision, resolve_mixed_precision
from kit.training.distribute import OnDevices, Placement, check_batch_size
from kit.training.optimizers import group_multipliers, make_optimizer, set_learning_rate, sync_model_state
from kit.training.precompute import activation_path, body_digest, split_activations
from kit.training.schedules import sgdr_total_epochs
from kit.training.state import assign_values, rng_state, set_rng_state, variable_values
from kit.training.weights import save_weights

# lr_find: at least this many points for a readable curve, at most this many batches of time.
LR_FIND_MIN_IT, LR_FIND_MAX_IT = 20, 200
# TTA's augmentations when training used none: the lesson's side-on flips and a mild zoom.
DEFAULT_TTA_TFMS = (RandomFlip(), RandomZoom(1.1))
# predict_files decodes this many files at a time: bounded memory (37 MB at 224 px) on any folder.
PREDICT_CHUNK = 256
# What `state_dict()` returns and `load_state_dict()` takes.
STATE_KEYS = ("model", "optimizer", "epochs_done", "position", "history", "rng")


def _check_metric(metric: str | None) -> str | None:
    return None if metric is None else check_choice("metric", metric, metrics.METRICS, prefix="ConvLearner's ")


def nll_loss() -> keras.losses.Loss:
    # The head ends in log-softmax, and log_softmax(log p) = log p, so "from logits" on
    # log-probabilities is exactly the negative log-likelihood, computed stably.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class ConvLearner(OnDevices):
    """The lesson's learner. Build it with `ConvLearner.pretrained(arch, data, precompute=True)`.

    Example:
        learn = ConvLearner.pretrained(resnet50, data, precompute=True)
        learn.fit(0.01, 3)
        log_preds = learn.predict()
    """

    def __init__(
        self,
        data: ImageClassifierData,
        arch: Arch,
        body: keras.Model,
        head: keras.Model,
        precompute: bool = False,
        opt: str = "sgd",
        momentum: float = 0.9,
        placement: Placement | None = None,
        mixed_precision: str | None = None,
        metric: str | None = None,
        members: Sequence[keras.Model] | None = None,
    ):
        """A learner over a body and a head already built (`pretrained` builds them).

        Args:
            members: list of keras.Model or None. When `head` is a bag (`kit.models.archs.build_bag`),
                its member heads, each trained on its own (`member`); None: the head is one head.
            placement: Placement or None. The devices (default: the backend's first). The body and
                head must have been built inside `placement.scope()`; every public method then runs
                inside it too (`OnDevices`).
            mixed_precision: str or None. The Keras dtype policy the body and head were built under
                (default: the body's); the learner's own models are built under the same one.
            metric: str or None. The competition's metric (a key of `kit.metrics.METRICS`), computed on
                the validation set each epoch: `logs["val_<metric>"]`, the table's column, `history`'s
                `<metric>` (see `metric`).
        """
        self.placement = placement or Placement.single()
        self.metric = metric
        policy = body.dtype_policy.name
        if mixed_precision is not None and resolve_mixed_precision(mixed_precision) != policy:
            raise ValueError(
                f"mixed_precision={mixed_precision!r} does not match the body, which was built under the {policy!r} dtype policy: "
                "build the body and head inside `kit.training.device.precision(...)`, or use ConvLearner.pretrained."
            )
        self.mixed_precision = policy
        self.data, self.arch, self.body, self.head = data, arch, body, head
        self.members: list[keras.Model] = list(members) if members else [head]
        self._member: int | None = None  # the member `fit` and `lr_find` train (`member`); None: the whole head
        self.opt, self.momentum = opt, momentum
        sz = data.sz
        self.backbone = body.layers[-1]
        with precision(policy), self.placement.scope():
            # One fused, jit-compilable layer (uint8 in, uint8 out). Without training augmentations it is
            # the TTA default, inactive in training: TTA then runs through the same compiled predict.
            self.augment = data.trn_tfms.augmentation() or Transforms(sz, DEFAULT_TTA_TFMS).augmentation(
                "tta_augment", in_training=False
            )
            img = keras.Input((sz, sz, 3), dtype="uint8", name="image")
            pooled = ConcatPool(name="concat_pool")(body(img))
            self.features_model = keras.Model(img, pooled, name="features")
            self.model = keras.Model(
                img, head(ConcatPool(name="pool")(body(self.augment(img)))), name=f"{arch.name}_learner"
            )
            self.placement.prepare_model(self.model)
        # None: XLA on JAX and TensorFlow (Keras' "auto" turns it off on a CPU-only TensorFlow), eager
        # on torch (torch.compile takes minutes and a C++ toolchain). Keras falls back, with a
        # warning, when a user's layer does not support XLA. Never under MirroredStrategy.
        self.jit_compile: bool | None = None if self.placement.supports_xla else False
        early, late = split_body_layers(self.backbone, arch.split_at)
        self.layer_groups: list[list[keras.layers.Layer]] = [early, late, list(head.layers)]
        self.train_bn = False
        self.sched: LRRangeTest | None = None
        self.history: list[dict] = []
        self._epochs_done = 0
        # The fit in progress and its epochs finished (`state_dict`'s "position"), and a loaded state's
        # position and optimizer values waiting for the next `fit` (the optimizer is built there).
        self._position: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._act: dict[str, np.ndarray] = {}
        self._compiled: dict[int, tuple[tuple, list[np.ndarray]]] = {}
        self.freeze()
        self._precompute = False
        self.precompute = precompute

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def pretrained(
        cls,
        arch: Any,
        data: ImageClassifierData,
        precompute: bool = False,
        weights: str | Path | None = "imagenet",
        ps: float | Sequence[float] | None = None,
        xtra_fc: Sequence[int] | None = None,
        opt: str = "sgd",
        momentum: float = 0.9,
        mixed_precision: str | bool | None = "auto",
        compilation_cache: bool | str | Path | None = None,
        devices: str | int | Sequence[str] | None = "auto",
        metric: str | None = None,
        bag: int = 1,
    ) -> ConvLearner:
        """A learner with a pretrained body (frozen) and a new head for `data.c` classes.

        Args:
            arch: `resnet50` (default in the kit), another kit arch, its name, or any
                keras.applications constructor.
            data: ImageClassifierData.
            precompute: bool. Run the frozen body once and train the head on cached activations;
                while `data`'s workers still decode, the body runs on each chunk as it lands.
            weights: "imagenet", None (random) or a weights file path.
            ps: float or list. Dropout of the head's layers (default 0.25, then 0.5 before the last).
            xtra_fc: list of int. Hidden layer widths of the head (default [512]).
            opt: str. "sgd" (momentum 0.9, as the lesson), "adam" or "adamw".
            mixed_precision: "auto" (bf16 on GPUs that have it, float32 elsewhere), True, False,
                or a Keras dtype policy name, for the learner's models (Keras' global policy is restored).
            compilation_cache: True, False, a folder, or None ($KIT_COMPILATION_CACHE decides): JAX's
                persistent compilation cache, so a second run loads its compiled steps from disk.
            devices: "auto" (every accelerator; one device on a CPU-only machine), an int (the first
                N) or a list of device names: data-parallel training (`kit.training.distribute`).
                `data.bs` stays the global batch and must be a multiple of the device count.
            metric: str or None. The competition's metric shown while training (`ConvLearner.metric`).
            bag: int. Heads in the head, each trained on its own on the precomputed activations
                (`member`), their probabilities averaged in every prediction (`build_bag`); 1: one head.
        """
        _check_metric(metric)  # before minutes of building a body
        bag = check_int("bag", bag, min=1, prefix="ConvLearner.pretrained's ")
        enable_compilation_cache(compilation_cache)
        placement = Placement.create(devices)
        check_batch_size(data.bs, placement.n)
        arch = get_arch(arch)
        # Variables made in the scope are replicated (JAX) or mirrored (TensorFlow) on every device;
        # the dtype policy holds for the learner's models only, not for models built afterwards.
        with precision(mixed_precision) as policy, placement.scope():
            body = build_body(arch, data.sz, weights)
            n_features = 2 * int(body.output.shape[-1])
            head, members = build_bag(
                n_features, data.c, bag, ps=list(ps) if isinstance(ps, (list, tuple)) else ps, xtra_fc=xtra_fc
            )
        return cls(
            data,
            arch,
            body,
            head,
            precompute=precompute,
            opt=opt,
            momentum=momentum,
            placement=placement,
            mixed_precision=policy,
            metric=metric,
            members=members,
        )

    # ----------------------------------------------------------------------------- metric
    @property
    def metric(self) -> str | None:
        """The competition's metric (a key of `kit.metrics.METRICS`) or None.

        Each epoch's validation computes it from the predicted probabilities into
        `logs["val_<metric>"]`; the table shows it after `accuracy` and `history` rows keep it under
        `<metric>`. "log_loss" and "accuracy" are the table's `val_loss` and `accuracy` already.
        """
        return self._metric

    @metric.setter
    def metric(self, value: str | None) -> None:
        self._metric = _check_metric(value)

    # ----------------------------------------------------------------------------- freezing
    def freeze_to(self, n: int) -> None:
        """Freezes layer groups before index n (0: early body, 1: late body, 2: head) and trains the rest.

        BatchNorm layers of the body stay in inference mode unless `unfreeze(train_bn=True)`:
        unfrozen BN statistics computed on small fine-tuning batches wreck a pretrained body.
        """
        n_groups = len(self.layer_groups)
        n = check_int("n", n, min=-n_groups, max=n_groups, prefix="freeze_to's layer-group index ")
        n = n % n_groups if n < 0 else n
        # Keras propagates a container's trainable flag to its children, so the backbone's flag
        # goes first and each layer's own flag after it.
        self.backbone.trainable = n < n_groups - 1
        for gi, group in enumerate(self.layer_groups):
            for layer in group:
                is_body_bn = isinstance(layer, keras.layers.BatchNormalization) and gi < n_groups - 1
                layer.trainable = gi >= n and (self.train_bn or not is_body_bn)
        self._frozen_to = n

    def freeze(self) -> None:
        """Trains only the head (the state after `pretrained`)."""
        self.freeze_to(len(self.layer_groups) - 1)

    def unfreeze(self, train_bn: bool = False) -> None:
        """Trains every layer group; BatchNorm statistics stay frozen unless train_bn=True."""
        self.train_bn = train_bn
        self.precompute = False
        self.freeze_to(0)

    # ----------------------------------------------------------------------------- precompute
    @property
    def precompute(self) -> bool:
        return self._precompute

    @precompute.setter
    def precompute(self, value: bool) -> None:
        if value and self._frozen_to < len(self.layer_groups) - 1:
            raise ValueError("precompute=True needs a frozen body: call learn.freeze() first.")
        if value:
            digest = self._body_digest()  # hashing the body's weights once, not once per split
            # All or nothing: the learner switches only once every split's activations are there.
            self._act = {
                name: self._activations(name, digest) for name in ("train", "valid", "test") if self._has(name)
            }
            self.data.warn_vanished()  # after: it needs every split's kept files, so waits for their decode
        self._precompute = bool(value)

    def _has(self, split: str) -> bool:
        return split != "test" or self.data.test_ds is not None

    def _body_digest(self) -> str:
        weights = (keras.ops.convert_to_numpy(w) for w in self.body.weights)
        return body_digest(self.arch.name, self.arch.preprocess_key, self.data.sz, weights)

    def activation_path(self, split: str, digest: str | None = None) -> Path:
        """Where a split's activations are cached: keyed by arch, body weights, size and the pixels it reads."""
        pixels = self.data.split(split).key  # not the files now on disk: a vanished file changes nothing
        return activation_path(self.data.tmp_dir, self.arch.name, digest or self._body_digest(), split, pixels)

    def _activations(self, split: str, digest: str) -> np.ndarray:
        return split_activations(
            self.data.split(split),
            split,
            folder=self.data.tmp_dir,
            arch=self.arch.name,
            body=digest,
            step=self._features_step,
            bs=self.data.bs,
            width=self.features_model.output.shape[-1],
        )

    def activations(self, split: str) -> np.ndarray:
        """The frozen body's pooled features (concat pooling) of a split, (N, features) float, as
        `precompute` caches them (read from the cache when there): for a model fit outside the kit,
        e.g. a scikit-learn baseline on the same features."""
        if split not in ("train", "valid", "test") or not self._has(split):
            raise ValueError(f"activations: no split {split!r} (the data has train, valid and an optional test).")
        return self._activations(split, self._body_digest())

    def _features_step(self, xb: np.ndarray) -> np.ndarray:
        # predict_on_batch runs the compiled (traced / jitted) predict step; a plain call would run
        # the body eagerly on TensorFlow, batch after batch: 3x slower than an epoch through it.
        return keras.ops.convert_to_numpy(self.placement.predict_on_batch(self.features_model, xb))

    # ----------------------------------------------------------------------------- a bag of heads
    @property
    def bag(self) -> int:
        """How many heads the head averages (`pretrained(bag=)`); 1: one head."""
        return len(self.members)

    @contextlib.contextmanager
    def member(self, i: int):
        """Trains member `i` of the bag alone on the precomputed activations, inside the `with` block.

        There `fit` and `lr_find` train that head only (with its own optimizer), and the validation
        figures, `predict()` and `state_dict()`'s fit are those of the bag of members 0..i: the members
        after `i` have not been trained yet. With one head, `member(0)` is the head.

        Example:
            for i in range(learn.bag):
                with learn.member(i):
                    learn.fit(learn.lr_find(), 3, cycle_len=1)
        """
        i = check_int("i", i, min=0, max=self.bag - 1, prefix=f"learn.member (a bag of {self.bag} heads): ")
        if not self.precompute:
            raise ValueError(
                "learn.member(i) trains one head of the bag on the precomputed activations: "
                "set learn.precompute = True first (a bag on images trains as one model)."
            )
        if self._member is not None:
            raise ValueError(f"learn.member({i}) inside learn.member({self._member}): one member at a time.")
        self._member = i
        try:
            yield self.members[i]
        finally:
            self._member = None

    def _fitting(self) -> keras.Model:
        """The model `fit` trains: a bag's member, the head on activations, or the whole model on images."""
        if not self.precompute:
            return self.model
        return self.head if self._member is None else self.members[self._member]

    # ----------------------------------------------------------------------------- training
    def _lrs(self, lrs: float | Sequence[float]) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(lrs, dtype=np.float64))
        if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or not np.any(arr > 0):
            raise ValueError(f"Learning rates must be non-negative, finite and not all zero. Received lrs={lrs!r}.")
        n = len(self.layer_groups)
        if len(arr) not in (1, n):
            raise ValueError(
                f"lrs needs 1 rate or one per layer group ({n}: early body, late body, head). Received {len(arr)}: {arr.tolist()}."
            )
        return arr

    def _compile(self, lrs: np.ndarray, optimizer_values: list[np.ndarray] | None = None) -> keras.Model:
        """Compiles the model being trained with an optimizer that gives each layer group its rate.

        The optimizer starts fresh, or from `optimizer_values` (a loaded state's, see `load_state_dict`).
        """
        model = self._fitting()
        if len(lrs) == 1:
            base, mult = float(lrs[0]), None
        elif self.precompute:
            base, mult = float(lrs[-1]), None  # only the head trains on activations
        else:
            groups = [[v for l in g for v in l.trainable_weights] for g in self.layer_groups]
            base, mult = group_multipliers(groups, lrs.tolist())
        # model.compile throws the traced (TensorFlow) or XLA-compiled (JAX) train step away: seconds
        # on every fit. When only the base rate differs, keep the step and restart the optimizer.
        jit = self.jit_compile if self.jit_compile is not None else default_jit_compile()
        key = (
            self.opt,
            self.momentum,
            jit,
            tuple(sorted((mult or {}).items())),
            tuple(v.path for v in model.trainable_variables),
        )
        done = self._compiled.get(id(model))
        if done is not None and done[0] == key and model.optimizer is not None:
            for var, value in zip(model.optimizer.variables, done[1], strict=True):
                var.assign(value)  # a fresh optimizer's state: step 0, no momentum (and the initial loss scale)
            set_learning_rate(model, base)
        else:
            opt = make_optimizer(self.opt, learning_rate=base, lr_multipliers=mult, momentum=self.momentum)
            model.compile(optimizer=opt, loss=nll_loss(), metrics=["accuracy"], jit_compile=jit)
            # Under mixed_float16 `compile` wraps `opt` in a LossScaleOptimizer, whose variables are its
            # step counter and loss scale, then the inner optimizer's: build and snapshot that one, the
            # optimizer the train step really uses, so the reset above assigns each value to its own variable.
            model.optimizer.build(model.trainable_variables)
            self._compiled[id(model)] = (key, variable_values(model.optimizer.variables))
        if optimizer_values is not None:
            # Only now can they be assigned: the optimizer, the LossScaleOptimizer's too, is built.
            assign_values(model.optimizer.variables, optimizer_values, "optimizer variables")
        return model

    def _passes(self, min_steps: int | None, epochs: int) -> int:
        """Passes over the activations in each epoch so that the fit makes at least `min_steps` steps
        (1 when training on images: a pass there costs the body's forward and backward)."""
        if not min_steps or not self.precompute:
            return 1
        per_epoch = math.ceil(min_steps / epochs)  # an epoch of p passes is ceil(n * p / bs) steps
        return max(1, math.ceil(per_epoch * self.data.bs / len(self.data.trn_y)))

    def _fit_data(self, epochs_into_fit: int = 0, passes: int = 1) -> tuple[dict, int]:
        """Keyword arguments for model.fit (the training batches, all of one shape) and the steps per epoch.

        The shuffling is seeded by the epochs done when the fit began; a fit continued after
        `epochs_into_fit` of its epochs gets the order those epochs left behind.
        """
        seed = self._epochs_done - epochs_into_fit
        if self.precompute:
            trn = Batches(
                self._act["train"], self.data.trn_y, self.data.bs, shuffle=True, seed=seed, fixed=True, passes=passes
            )
        else:
            trn = self.data.batches("train", shuffle=True, seed=seed, fixed=True)
        for _ in range(epochs_into_fit):
            trn.on_epoch_end()
        # shuffle=False: the batches reshuffle their rows every epoch from their own seed; Keras'
        # extra shuffle of batch order would draw from Python's global `random`, which a resumed
        # run (`kit train --resume`) could not replay.
        return dict(x=trn, shuffle=False), len(trn)

    def _predict_split(self, split: str) -> np.ndarray:
        """Log-probabilities of a split through the compiled predict function, batches of one shape."""
        if self.precompute:
            batches = Batches(self._act[split], None, self.data.bs, fixed=True)
            if self._member is None:
                return self._predict(self.head, batches)
            # Inside `member(i)`: the bag of the members trained so far, as it will stand after member i.
            trained = np.stack([self._predict(m, batches) for m in self.members[: self._member + 1]])
            return np.asarray(keras.ops.convert_to_numpy(log_mean_exp(keras.ops.convert_to_tensor(trained))))
        return self._predict(self.model, self._image_batches(split))

    def _image_batches(self, split: str) -> Batches:
        """A split's images in file order, in batches of one shape (the compiled predict's)."""
        s = self.data.split(split)
        return Batches(s.images, None, self.data.bs, rows=s.rows, fixed=True)

    @staticmethod
    def _predict(model: keras.Model, batches: Batches) -> np.ndarray:
        return np.asarray(model.predict(batches, verbose=0), dtype=np.float32)[: batches.n]

    def _validate(self, logs: dict) -> None:
        """val_loss, accuracy and the metric through the predict function: no second compiled (test) step.
        Without validation images (`kit train --all`) there is nothing to log: the table shows '-'."""
        if len(self.data.val_y) == 0:
            return
        log_preds, y = self._predict_split("valid"), self.data.val_y
        logs["val_loss"] = metrics.nll(y, log_preds)
        logs["val_accuracy"] = metrics.accuracy(y, log_preds)
        if self.metric is not None and self.metric not in ("log_loss", "accuracy"):
            logs[f"val_{self.metric}"] = metrics.score(self.metric, y, np.exp(log_preds))

    def fit(
        self,
        lrs: float | Sequence[float],
        n_cycle: int,
        cycle_len: int | None = None,
        cycle_mult: int = 1,
        best_save_name: str | None = None,
        cycle_save_name: str | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        verbose: bool = True,
        min_steps: int | None = None,
    ) -> list[float]:
        """Trains, printing `epoch trn_loss val_loss accuracy`; returns [val_loss, accuracy].

        Stops at the first NaN or infinite batch loss, restores the weights of that epoch's start and
        raises `DivergedError` (a FloatingPointError) naming the epoch, the rate and what to try.

        Each finished epoch is recorded (`history`, `epochs_done`, `state_dict()`'s position) before
        `callbacks` see it. After `load_state_dict` of a state saved inside a fit, the same call (same
        arguments, the learner configured as then) continues that fit from its next epoch: its
        optimizer state, SGDR schedule and shuffling go on exactly; if the state was saved after the
        fit's last epoch, it returns that epoch's figures at once.

        Example:
            learn.fit(1e-2, 3)                                     # 3 epochs at a constant rate
            learn.fit(1e-2, 3, cycle_len=1, cycle_mult=2)          # SGDR: 1 + 2 + 4 = 7 epochs
            learn.fit(np.array([1e-4, 1e-3, 1e-2]), 3, cycle_len=1)  # differential rates

        Args:
            lrs: float or array. One rate, or one per layer group (early body, late body, head).
            n_cycle: int. Epochs (without cycle_len) or SGDR cycles (with it).
            cycle_len: int or None. Epochs in the first cosine cycle (SGDR with warm restarts).
            cycle_mult: int. Each cycle is cycle_mult times longer than the one before.
            best_save_name: str. Save the weights with the best val_loss as models/<name>.
            cycle_save_name: str. Save the weights at the end of each cycle as models/<name>_cycle<i>.
            callbacks: extra Keras callbacks.
            verbose: bool. Print the table and progress bars.
            min_steps: int or None. With precomputed activations, each epoch is as many shuffled passes
                over them as make the fit at least this many optimizer steps: a step on activations
                costs next to nothing, and a small data set's few steps leave a fresh head unfit
                (633 dog photos of 120 breeds: 30 steps in 3 epochs). Ignored when training on images.

        Raises:
            DivergedError: the loss became NaN or infinite.
            ValueError: an argument out of range, or a loaded state inside another fit than this one.
        """
        n_cycle = check_int("n_cycle", n_cycle, min=1)
        cycle_len = check_int("cycle_len", cycle_len, min=1, none_ok=True)
        cycle_mult = check_int("cycle_mult", cycle_mult, min=1)
        lrs = self._lrs(lrs)
        epochs = n_cycle if cycle_len is None else sgdr_total_epochs(n_cycle, cycle_len, cycle_mult)
        check_int("min_steps", min_steps, min=0, none_ok=True)
        passes = self._passes(min_steps, epochs)
        spec = self._fit_spec(lrs, n_cycle, cycle_len, cycle_mult, epochs)
        if passes > 1:  # only then: a state saved by an earlier release still names its fit the same
            spec["passes"] = passes
        start, optimizer_values, rng = self._continue_at(spec)
        if start == epochs:  # the loaded state closed this fit
            last = self.history[-1]
            return [last.get("val_loss"), last.get("accuracy")]
        model = self._compile(lrs, optimizer_values)
        fit_kw, steps = self._fit_data(start, passes)
        first = self._epochs_done - start  # the learner's epochs when this fit began: the table's numbering
        cbs: list[keras.callbacks.Callback] = []
        if rng is not None:
            # As training begins, after Keras' own setup: on torch that draws from the global generator
            # (a first batch to build the metrics), which the uninterrupted run did before the saved epoch.
            cbs.append(keras.callbacks.LambdaCallback(on_train_begin=lambda logs: set_rng_state(rng)))
        # First, so the table, checkpoints and History read its val_loss and val_accuracy.
        cbs.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self._validate(logs)))
        # Before the schedule, checkpoints and the table: it restores the weights of a diverged epoch.
        guard = DivergenceGuard(epoch_offset=first, raise_error=False)
        cbs.append(guard)
        if cycle_len is not None:
            cbs.append(
                SGDR(
                    base_lr=float(lrs.max()),
                    steps_per_epoch=steps,
                    cycle_len=cycle_len,
                    cycle_mult=cycle_mult,
                    cycle_save_name=str(self._model_path(cycle_save_name)) if cycle_save_name else None,
                )
            )
        if best_save_name:
            cbs.append(self._save_best(model, self._model_path(best_save_name)))
        title = self.device_line
        if self._member is not None and self.bag > 1:  # the table's figures are the bag's so far
            title += f"; head {self._member + 1} of {self.bag}, validated as the mean of heads 1-{self._member + 1}"
        table = EpochTable(start_epoch=first, show=verbose, title=title, metric=self.metric)
        cbs.append(table)
        # Last of the learner's own and before the caller's: a checkpoint reads the state of this epoch's end.
        cbs.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self._record_epoch(guard, table)))
        self._position = {**spec, "epoch": start}
        try:
            # initial_epoch: SGDR reads its place in the schedule from Keras' epoch index.
            model.fit(epochs=epochs, initial_epoch=start, callbacks=cbs + list(callbacks or []), verbose=0, **fit_kw)
        finally:
            self._position = None
        if guard.error is not None:
            raise guard.error
        last = self.history[-1]
        return [last.get("val_loss"), last.get("accuracy")]

    def _fit_spec(self, lrs: np.ndarray, n_cycle: int, cycle_len: int | None, cycle_mult: int, epochs: int) -> dict:
        """What identifies a fit, as JSON: its arguments and the configuration its optimizer depends on."""
        return {
            "lrs": lrs.tolist(),
            "n_cycle": n_cycle,
            "cycle_len": cycle_len,
            "cycle_mult": cycle_mult,
            "epochs": epochs,
            "opt": str(self.opt),
            "momentum": float(self.momentum),
            "precompute": bool(self.precompute),
            "frozen_to": int(self._frozen_to),
            "train_bn": bool(self.train_bn),
            # Only inside `member(i)`: a state saved by an earlier release still names its fit the same.
            **({"member": self._member} if self._member is not None else {}),
        }

    def _continue_at(self, spec: dict) -> tuple[int, list[np.ndarray] | None, dict | None]:
        """(first epoch, optimizer values, random states) of a fit: where a loaded state stands inside it,
        else (0, None, None)."""
        pending = self._pending
        if pending is None:
            return 0, None, None
        position = pending["position"]
        keys = list(spec) + [k for k in ("member",) if k in position and k not in spec]
        saved, now = {k: position.get(k) for k in keys}, {k: spec.get(k) for k in keys}
        if saved != now:
            if position["epoch"] == position["epochs"]:  # that fit had ended: this one is the next
                self._pending = None
                return 0, None, None
            diff = ", ".join(f"{k}={saved[k]!r} then, {now[k]!r} now" for k in keys if saved[k] != now[k])
            raise ValueError(
                f"The loaded state stands after epoch {position['epoch']} of {position['epochs']} of another fit: "
                f"{diff}. Call fit with the arguments it had, with the learner configured as then "
                "(freeze_to / unfreeze / precompute / member), to continue it."
            )
        self._pending = None
        return int(position["epoch"]), pending["optimizer"], pending["rng"]

    def _record_epoch(self, guard: DivergenceGuard, table: EpochTable) -> None:
        if guard.error is not None:
            return  # a diverged epoch: its weights went back to its start, so it never happened
        self.history.append(table.rows[-1])
        self._epochs_done += 1
        self._position["epoch"] += 1

    def _save_best(self, model: keras.Model, path: Path) -> keras.callbacks.Callback:
        """Saves the whole model's weights (not only the head being fit) whenever val_loss improves,
        built in memory and written atomically (Keras' ModelCheckpoint lets HDF5 write the file)."""
        best = [math.inf]

        def on_epoch_end(epoch, logs):
            val_loss = (logs or {}).get("val_loss")
            if val_loss is not None and math.isfinite(val_loss) and val_loss < best[0]:
                best[0] = val_loss
                sync_model_state(model)
                save_weights(self.model, path)

        return keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)

    def lr_find(
        self,
        start_lr: float = 1e-5,
        end_lr: float = 10.0,
        num_it: int | None = None,
        linear: bool = False,
        lrs: Sequence[float] | None = None,
    ) -> float:
        """Runs the learning-rate range test (Smith 2015) and returns the suggested rate.

        The model's weights and the optimizer are restored afterwards; `learn.sched.plot()` shows
        loss against rate and `learn.sched.plot_lr()` the rate against iteration.

        Args:
            start_lr, end_lr: float. The range, grown exponentially (or linearly) per batch.
            num_it: int. Batches to run (default: one epoch, at least 20, at most 200).
            linear: bool. Grow the rate linearly.
            lrs: array or None. Per-group rate ratios to keep while sweeping (differential rates).
        """
        fit_kw, steps = self._fit_data()
        if num_it is None:
            num_it = int(min(max(steps, LR_FIND_MIN_IT), LR_FIND_MAX_IT))
        sched = LRRangeTest(start_lr=start_lr, end_lr=end_lr, num_it=num_it, linear=linear)
        ratios = self._lrs(lrs) / max(self._lrs(lrs)) if lrs is not None else np.ones(1)
        model = self._compile(ratios * start_lr)
        model.fit(epochs=math.ceil(num_it / steps), callbacks=[sched], verbose=0, **fit_kw)
        self.sched = sched
        return sched.suggestion()

    # ----------------------------------------------------------------------------- prediction
    def predict(self, is_test: bool = False) -> np.ndarray:
        """Log-probabilities (N, c) of the validation (or test) set, in file order."""
        split = "test" if is_test else "valid"
        if is_test and self.data.test_ds is None:
            raise ValueError(
                "predict(is_test=True) needs a test set: ImageClassifierData.from_paths(..., test_name='test')."
            )
        return self._predict_split(split)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Log-probabilities of a batch of uint8 images (n, sz, sz, 3), through the compiled predict."""
        return self._predict(self.model, Batches(np.asarray(x, dtype=np.uint8), None, self.data.bs, fixed=True))

    def predict_files(
        self, paths: Sequence[str | os.PathLike], bs: int | None = None, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Log-probabilities of image files, in the order given, and a mask of the files that could be read.

        Each file is decoded as in training (shorter side to `sz`, centre crop), PREDICT_CHUNK files
        at a time, so any number of files fits in memory. Files that cannot be read (missing,
        corrupt, truncated, not an image) are named in one warning and skipped: their rows are NaN
        (so a careless argmax cannot pass for a prediction) and `ok` is False there.

        Example:
            log_probs, ok = learn.predict_files(["cat.jpg", "dog.png"])
            probs = np.exp(log_probs[ok]); classes = [data.classes[i] for i in probs.argmax(1)]

        Args:
            paths: list of str or Path. The image files.
            bs: int or None. Batch size (default: the data's).
            progress: bool. Show a progress bar over the chunks.

        Returns:
            (log_probs, ok): float32 (N, c), NaN rows for skipped files; bool (N,).
        """
        paths = [Path(p) for p in paths]
        log_probs = np.full((len(paths), self.data.c), np.nan, dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        errors: list[str] = []
        starts = range(0, len(paths), PREDICT_CHUNK)
        for start in tqdm(starts, desc="predict", unit="chunk", leave=False, disable=not progress or len(starts) < 2):
            images, good, errs = decode_files(
                paths[start : start + PREDICT_CHUNK], self.data.sz, workers=self.data.num_workers
            )
            errors += errs
            idx = start + np.flatnonzero(good)
            if len(idx):
                log_probs[idx] = self._predict(
                    self.model, Batches(images, None, bs or self.data.bs, rows=np.flatnonzero(good), fixed=True)
                )
                ok[idx] = True
        if errors:
            listing = "\n  ".join(errors)
            warnings.warn(
                f"Skipped {len(errors)} of {len(paths)} files that could not be read as images:\n  {listing}",
                stacklevel=2,
            )
        return log_probs, ok

    def TTA(self, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Test-time augmentation: (log_preds of shape (1 + n_aug, N, c), labels or None for test).

        The first pass is the plain images; the others use the training augmentations (or flips and
        a mild zoom if training used none). `np.mean(np.exp(log_preds), 0)` gives the probabilities.
        """
        n_aug = check_int("n_aug", n_aug, min=0)
        if is_test and self.data.test_ds is None:
            raise ValueError(
                "TTA(is_test=True) needs a test set: ImageClassifierData.from_paths(..., test_name='test')."
            )
        split = "test" if is_test else "valid"
        passes = [self._predict_split(split)]
        batches = self._image_batches(split)
        # The augmentation layer inside the model, switched on: the same compiled predict function.
        with self.augment.at_inference():
            for _ in tqdm(range(n_aug), desc="TTA", leave=False, disable=n_aug == 0):
                passes.append(self._predict(self.model, batches))
        y = None if is_test else self.data.val_y
        return np.stack(passes), y

    # ----------------------------------------------------------------------------- persistence
    def _model_path(self, name: str | os.PathLike) -> Path:
        # A bare name lives in PATH/models/; a path (absolute, or with a folder) is used as it is.
        name = str(name)
        if not name.endswith(".weights.h5"):
            name += ".weights.h5"
        return Path(name) if os.sep in name else self.data.models_dir / name

    def save(self, name: str | os.PathLike) -> Path:
        """Saves all weights to `PATH/models/<name>.weights.h5` (or to a path), atomically."""
        # Built in memory, then written with ordinary file I/O: a full disk is an OSError naming the
        # folder, never a crash inside HDF5; NaN weights are refused (kit.training.weights).
        return save_weights(self.model, self._model_path(name))

    def load(self, name: str) -> None:
        """Loads weights saved by `save(name)`; cached activations are recomputed if the body changed."""
        path = self._model_path(name)
        if not path.is_file():
            have = (
                sorted(p.name for p in self.data.models_dir.glob("*.weights.h5"))
                if self.data.models_dir.is_dir()
                else []
            )
            raise FileNotFoundError(f"No saved weights {path}. Saved here: {have or 'none'}.")
        self.model.load_weights(str(path))
        if self.precompute:
            self.precompute = True

    @property
    def epochs_done(self) -> int:
        """Epochs trained by every `fit` so far (the next epoch's number in the table)."""
        return self._epochs_done

    def state_dict(self) -> dict[str, Any]:
        """Everything training needs to continue exactly, as numpy arrays and JSON-able facts.

        Example:
            state = learn.state_dict()   # e.g. in a callback at an epoch's end (EpochCheckpoint)
            learn.load_state_dict(state)  # later, or in another process: the same fit continues

        Returns:
            dict with "model" (the values of every variable of `learn.model`: weights, BatchNorm
            statistics, seed-generator states), "optimizer" (the values of the optimizer's variables,
            under mixed_float16 the loss scale's too, while a fit is in progress; None between fits,
            whose next fit starts a fresh optimizer), "epochs_done", "position" (the fit in progress:
            its arguments, the configuration it trains and its epochs finished; None between fits),
            "history" (the table rows) and "rng" (global random states: torch's).
        """
        optimizer, position, rng = None, None, None
        if self._pending is not None:  # loaded, not yet continued: give the loaded state back
            optimizer, position, rng = self._pending["optimizer"], self._pending["position"], self._pending["rng"]
        elif self._position is not None:
            fitting = self._fitting()
            sync_model_state(fitting)  # JAX keeps a fit's state outside the variables between batches
            optimizer, position = variable_values(fitting.optimizer.variables), self._position
        return {
            "model": variable_values(self.model.variables),
            "optimizer": None if optimizer is None else [np.array(a, copy=True) for a in optimizer],
            "epochs_done": self._epochs_done,
            "position": copy.deepcopy(position),
            "history": copy.deepcopy(self.history),
            "rng": copy.deepcopy(rng) if rng is not None else rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Puts back what `state_dict()` returned (or `read_checkpoint` read).

        The model's variables, the epochs done and the history are set at once. A state saved inside
        a fit waits for the next `fit`: called with the same arguments, the learner configured as
        then, it assigns the saved optimizer state once its optimizer is built, the global random
        states as training begins, and continues from the saved epoch. Those of a state saved
        between fits (or after a fit's last epoch) are set at once.

        Args:
            state: dict. The keys of `state_dict()`; others (a checkpoint's "facts") are ignored.

        Raises:
            ValueError: a key is missing or malformed, or the state is another model's (another
                architecture, size or number of classes): nothing is changed then.
        """
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"load_state_dict takes what state_dict() returns; this state lacks {missing}. "
                f"Received keys {sorted(state)}."
            )
        epochs_done = check_int("state['epochs_done']", state["epochs_done"], min=0)
        position, optimizer = state["position"], state["optimizer"]
        if position is not None:
            if not isinstance(position, Mapping) or not all(k in position for k in ("epoch", "epochs")):
                raise ValueError(
                    "state['position'] must be None or the dict state_dict() writes, with 'epoch' and 'epochs'. "
                    f"Received position={position!r}."
                )
            epochs = check_int("state['position']['epochs']", position["epochs"], min=1)
            epoch = check_int("state['position']['epoch']", position["epoch"], min=0, max=min(epochs, epochs_done))
            if optimizer is None and epoch < epochs:
                raise ValueError(
                    f"A state inside a fit (after epoch {epoch} of {epochs}) carries its optimizer's values. "
                    "Received optimizer=None."
                )
        assign_values(self.model.variables, state["model"], "model variables")
        rng = dict(state["rng"] or {})
        if position is None or position["epoch"] == position["epochs"]:
            set_rng_state(rng)  # what comes next starts as the uninterrupted run's next fit did
        self.history = copy.deepcopy(list(state["history"]))
        self._epochs_done = epochs_done
        self._pending = (
            None
            if position is None
            else {
                "position": copy.deepcopy(dict(position)),
                "optimizer": None if optimizer is None else [np.array(a, copy=True) for a in optimizer],
                "rng": rng,
            }
        )
        if self.precompute:
            self.precompute = True  # cached activations follow the body's weights

    @property
    def device_line(self) -> str:
        """Where the learner trains, as the epoch table's first line: "2 × Tesla T4, jax, mixed_float16"."""
        return self.placement.describe(self.mixed_precision)

    # ----------------------------------------------------------------------------- analysis
    def interpret(self, tta: bool = False):
        """An `Interpretation` of the validation predictions (the lesson's plots and selections)."""
        from kit import lesson
        from kit.analysis.interpretation import Interpretation

        # The lesson's bare functions (most_by_correct, plot_val_with_title, ...) act on this one.
        return lesson.use(Interpretation.from_learner(self, tta=tta))

    def __repr__(self) -> str:
        bag = f", bag={self.bag}" if self.bag > 1 else ""
        return f"ConvLearner({self.arch.name}, classes={self.data.c}, sz={self.data.sz}, precompute={self.precompute}, frozen_to={self._frozen_to}{bag})"
