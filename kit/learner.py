"""`ConvLearner`: a pretrained body, the lesson's head, and fit / lr_find / predict / TTA over Keras.

Underneath are ordinary Keras models: `learn.model` (uint8 images → log-probabilities, augmentation
active only while training), `learn.body`, `learn.head`; `fit` is `keras.Model.fit` with callbacks.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from tqdm.auto import tqdm

from kit.callbacks.lr_range_test import LRRangeTest
from kit.callbacks.progress import EpochTable
from kit.callbacks.sgdr import SGDR
from kit.data.cache import files_key
from kit.data.dataset import Batches, ImageClassifierData
from kit.data.transforms import RandomFlip, RandomZoom, Transforms
from kit.device import configure as configure_precision
from kit.models import Arch, ConcatPool, build_body, build_head, get_arch, split_body_layers
from kit.optimizers import group_multipliers, make_optimizer, set_learning_rate
from kit.schedules import sgdr_total_epochs

# lr_find: at least this many points for a readable curve, at most this many batches of time.
LR_FIND_MIN_IT, LR_FIND_MAX_IT = 20, 200
# TTA's augmentations when training used none: the lesson's side-on flips and a mild zoom.
DEFAULT_TTA_TFMS = (RandomFlip(), RandomZoom(1.1))


def _loss():
    # The head ends in log-softmax, and log_softmax(log p) = log p, so "from logits" on
    # log-probabilities is exactly the negative log-likelihood, computed stably.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class ConvLearner:
    """The lesson's learner. Build it with `ConvLearner.pretrained(arch, data, precompute=True)`.

    Example:
        learn = ConvLearner.pretrained(resnet50, data, precompute=True)
        learn.fit(0.01, 3)
        log_preds = learn.predict()
    """

    def __init__(self, data: ImageClassifierData, arch: Arch, body: keras.Model, head: keras.Model, precompute: bool = False, opt: str = "sgd", momentum: float = 0.9):
        self.data, self.arch, self.body, self.head = data, arch, body, head
        self.opt, self.momentum = opt, momentum
        sz = data.sz
        self.backbone = body.layers[-1]
        self.augment = data.trn_tfms.augmentation()
        img = keras.Input((sz, sz, 3), dtype="uint8", name="image")
        pooled = ConcatPool(name="concat_pool")(body(img))
        self.features_model = keras.Model(img, pooled, name="features")
        x = img
        if self.augment is not None:
            # Augment in float, then back to the uint8 the body's input expects.
            x = keras.layers.Lambda(lambda t: keras.ops.cast(keras.ops.clip(t, 0, 255), "uint8"), name="to_uint8")(
                self.augment(keras.ops.cast(img, "float32"))
            )
        self.model = keras.Model(img, head(ConcatPool(name="pool")(body(x))), name=f"{arch.name}_learner")
        early, late = split_body_layers(self.backbone, arch.split_at)
        self.layer_groups: list[list[keras.layers.Layer]] = [early, late, list(head.layers)]
        self.train_bn = False
        self.sched: LRRangeTest | None = None
        self.history: list[dict] = []
        self._epochs_done = 0
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
    ) -> "ConvLearner":
        """A learner with a pretrained body (frozen) and a new head for `data.c` classes.

        Args:
            arch: `resnet50` (default in the kit), another kit arch, its name, or any
                keras.applications constructor.
            data: ImageClassifierData.
            precompute: bool. Run the frozen body once and train the head on cached activations.
            weights: "imagenet", None (random) or a weights file path.
            ps: float or list. Dropout of the head's layers (default 0.25, then 0.5 before the last).
            xtra_fc: list of int. Hidden layer widths of the head (default [512]).
            opt: str. "sgd" (momentum 0.9, as the lesson), "adam" or "adamw".
            mixed_precision: "auto" (bf16 on GPUs that have it, float32 elsewhere), True, False,
                or a Keras dtype policy name. Set before the models are built.
        """
        configure_precision(mixed_precision)
        arch = get_arch(arch)
        body = build_body(arch, data.sz, weights)
        n_features = 2 * int(body.output.shape[-1])
        head = build_head(n_features, data.c, ps=list(ps) if isinstance(ps, (list, tuple)) else ps, xtra_fc=xtra_fc)
        learn = cls(data, arch, body, head, precompute=False, opt=opt, momentum=momentum)
        learn.weights_source = str(weights)
        learn.precompute = precompute
        return learn

    # ----------------------------------------------------------------------------- freezing
    def freeze_to(self, n: int) -> None:
        """Freezes layer groups before index n (0: early body, 1: late body, 2: head) and trains the rest.

        BatchNorm layers of the body stay in inference mode unless `unfreeze(train_bn=True)`:
        unfrozen BN statistics computed on small fine-tuning batches wreck a pretrained body.
        """
        n_groups = len(self.layer_groups)
        if not -n_groups <= n <= n_groups:
            raise ValueError(f"freeze_to takes a layer-group index in [{-n_groups}, {n_groups}]. Received n={n}.")
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
        self._precompute = bool(value)
        if value:
            digest = self._body_digest()  # hashing the body's weights once, not once per split
            self._act = {name: self._activations(name, digest) for name in ("train", "valid", "test") if self._has(name)}

    def _has(self, split: str) -> bool:
        return split != "test" or self.data.test_ds is not None

    def _body_digest(self) -> str:
        h = hashlib.sha1(f"{self.arch.name}|{self.arch.preprocess}|{self.data.sz}".encode())
        for w in self.body.weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
        return h.hexdigest()[:12]

    def activation_path(self, split: str, digest: str | None = None) -> Path:
        """Where a split's activations are cached: keyed by arch, body weights, size and file list."""
        s = self.data.split(split)
        key = files_key(s.files, self.data.sz)
        return self.data.tmp_dir / f"act_{self.arch.name}_{digest or self._body_digest()}_{split}_{key}.npy"

    def _activations(self, split: str, digest: str) -> np.ndarray:
        path = self.activation_path(split, digest)
        if path.exists():
            return np.load(path)
        batches = self.data.batches(split, shuffle=False)
        feats = np.empty((len(self.data.split(split)), self.features_model.output.shape[-1]), dtype=np.float32)
        i = 0
        for b in tqdm(range(len(batches)), desc=f"precompute {split}", unit="batch", leave=False):
            out = np.asarray(keras.ops.convert_to_numpy(self._features_step(batches[b][0])), dtype=np.float32)
            feats[i : i + len(out)] = out
            i += len(out)
        self.data.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
        return feats

    def _features_step(self, xb: np.ndarray):
        # predict_on_batch runs the compiled (traced / jitted) predict step; a plain call would run
        # the body eagerly on TensorFlow, batch after batch: 3x slower than an epoch through it.
        return self.features_model.predict_on_batch(xb)

    # ----------------------------------------------------------------------------- training
    def _lrs(self, lrs: float | Sequence[float]) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(lrs, dtype=np.float64))
        if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or not np.any(arr > 0):
            raise ValueError(f"Learning rates must be non-negative, finite and not all zero. Received lrs={lrs!r}.")
        n = len(self.layer_groups)
        if len(arr) not in (1, n):
            raise ValueError(f"lrs needs 1 rate or one per layer group ({n}: early body, late body, head). Received {len(arr)}: {arr.tolist()}.")
        return arr

    def _compile(self, lrs: np.ndarray) -> keras.Model:
        """Compiles the model being trained with an optimizer that gives each layer group its rate."""
        model = self.head if self.precompute else self.model
        if len(lrs) == 1:
            base, mult = float(lrs[0]), None
        elif self.precompute:
            base, mult = float(lrs[-1]), None  # only the head trains on activations
        else:
            groups = [[v for l in g for v in l.trainable_weights] for g in self.layer_groups]
            base, mult = group_multipliers(groups, lrs.tolist())
        # model.compile throws the traced (TensorFlow) or XLA-compiled (JAX) train step away: seconds
        # on every fit. When only the base rate differs, keep the step and restart the optimizer.
        key = (self.opt, self.momentum, tuple(sorted((mult or {}).items())), tuple(v.path for v in model.trainable_variables))
        done = self._compiled.get(id(model))
        if done is not None and done[0] == key and model.optimizer is not None:
            for var, value in zip(model.optimizer.variables, done[1]):
                var.assign(value)  # a fresh optimizer's state: step 0, no momentum
            set_learning_rate(model, base)
            return model
        opt = make_optimizer(self.opt, learning_rate=base, lr_multipliers=mult, momentum=self.momentum)
        model.compile(optimizer=opt, loss=_loss(), metrics=["accuracy"])
        opt.build(model.trainable_variables)
        self._compiled[id(model)] = (key, [np.array(keras.ops.convert_to_numpy(v)) for v in opt.variables])
        return model

    def _fit_data(self) -> tuple[dict, int]:
        """Keyword arguments for model.fit (data and validation) and the steps per epoch."""
        bs = self.data.bs
        if self.precompute:
            x, y = self._act["train"], self.data.trn_y
            return dict(x=x, y=y, batch_size=bs, shuffle=True, validation_data=(self._act["valid"], self.data.val_y)), math.ceil(len(x) / bs)
        trn = self.data.batches("train", shuffle=True, seed=self._epochs_done)
        return dict(x=trn, validation_data=self.data.batches("valid")), len(trn)

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
    ) -> list[float]:
        """Trains, printing `epoch trn_loss val_loss accuracy`; returns [val_loss, accuracy].

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
        """
        if not isinstance(n_cycle, int) or n_cycle < 1:
            raise ValueError(f"n_cycle must be a positive integer. Received n_cycle={n_cycle!r}.")
        if cycle_len is not None and (not isinstance(cycle_len, int) or cycle_len < 1):
            raise ValueError(f"cycle_len must be a positive integer or None. Received cycle_len={cycle_len!r}.")
        if not isinstance(cycle_mult, int) or cycle_mult < 1:
            raise ValueError(f"cycle_mult must be a positive integer. Received cycle_mult={cycle_mult!r}.")
        lrs = self._lrs(lrs)
        model = self._compile(lrs)
        fit_kw, steps = self._fit_data()
        cbs: list[keras.callbacks.Callback] = []
        if cycle_len is None:
            epochs = n_cycle
        else:
            epochs = sgdr_total_epochs(n_cycle, cycle_len, cycle_mult)
            cbs.append(SGDR(base_lr=float(lrs.max()), steps_per_epoch=steps, cycle_len=cycle_len, cycle_mult=cycle_mult,
                            cycle_save_name=str(self._model_path(cycle_save_name)) if cycle_save_name else None))
        if best_save_name:
            self.data.models_dir.mkdir(parents=True, exist_ok=True)
            cbs.append(keras.callbacks.ModelCheckpoint(str(self._model_path(best_save_name)), monitor="val_loss", save_best_only=True, save_weights_only=True))
        table = EpochTable(start_epoch=self._epochs_done, show=verbose)
        cbs.append(table)
        model.fit(epochs=epochs, callbacks=cbs + list(callbacks or []), verbose=0, **fit_kw)
        self._epochs_done += epochs
        self.history += table.rows
        last = table.rows[-1]
        return [last["val_loss"], last["accuracy"]]

    def lr_find(self, start_lr: float = 1e-5, end_lr: float = 10.0, num_it: int | None = None, linear: bool = False, lrs: Sequence[float] | None = None) -> float:
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
        fit_kw.pop("validation_data", None)
        model.fit(epochs=math.ceil(num_it / steps), callbacks=[sched], verbose=0, **fit_kw)
        self.sched = sched
        return sched.suggestion()

    # ----------------------------------------------------------------------------- prediction
    def _batches(self, is_test: bool) -> Batches:
        return self.data.batches("test" if is_test else "valid")

    def predict(self, is_test: bool = False) -> np.ndarray:
        """Log-probabilities (N, c) of the validation (or test) set, in file order."""
        split = "test" if is_test else "valid"
        if is_test and self.data.test_ds is None:
            raise ValueError("predict(is_test=True) needs a test set: ImageClassifierData.from_paths(..., test_name='test').")
        if self.precompute:
            return np.asarray(self.head.predict(self._act[split], batch_size=self.data.bs, verbose=0), dtype=np.float32)
        return np.asarray(self.model.predict(self._batches(is_test), verbose=0), dtype=np.float32)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Log-probabilities of a batch of uint8 images (n, sz, sz, 3)."""
        return np.asarray(keras.ops.convert_to_numpy(self.model(np.asarray(x, dtype=np.uint8), training=False)), dtype=np.float32)

    def TTA(self, n_aug: int = 4, is_test: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Test-time augmentation: (log_preds of shape (1 + n_aug, N, c), labels or None for test).

        The first pass is the plain images; the others use the training augmentations (or flips and
        a mild zoom if training used none). `np.mean(np.exp(log_preds), 0)` gives the probabilities.
        """
        if not isinstance(n_aug, int) or n_aug < 0:
            raise ValueError(f"n_aug must be a non-negative integer. Received n_aug={n_aug!r}.")
        if is_test and self.data.test_ds is None:
            raise ValueError("TTA(is_test=True) needs a test set: ImageClassifierData.from_paths(..., test_name='test').")
        aug = self.augment or Transforms(self.data.sz, DEFAULT_TTA_TFMS).augmentation("tta_augment")
        batches = self._batches(is_test)
        plain = np.asarray(self.model.predict(batches, verbose=0), dtype=np.float32)
        passes = [plain]
        for _ in tqdm(range(n_aug), desc="TTA", leave=False, disable=n_aug == 0):
            outs = []
            for b in range(len(batches)):
                xb = batches[b][0]
                xa = keras.ops.convert_to_numpy(aug(keras.ops.cast(xb, "float32"), training=True))
                outs.append(self.predict_array(np.clip(np.rint(xa), 0, 255).astype(np.uint8)))
            passes.append(np.concatenate(outs))
        y = None if is_test else self.data.val_y
        return np.stack(passes), y

    # ----------------------------------------------------------------------------- persistence
    def _model_path(self, name: str) -> Path:
        name = str(name)
        if not name.endswith(".weights.h5"):
            name += ".weights.h5"
        return self.data.models_dir / name

    def save(self, name: str) -> Path:
        """Saves all weights to `path/models/<name>.weights.h5` (atomically)."""
        path = self._model_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{os.getpid()}.{path.name}")
        self.model.save_weights(str(tmp))
        os.replace(tmp, path)
        return path

    def load(self, name: str) -> None:
        """Loads weights saved by `save(name)`; cached activations are recomputed if the body changed."""
        path = self._model_path(name)
        if not path.is_file():
            have = sorted(p.name for p in self.data.models_dir.glob("*.weights.h5")) if self.data.models_dir.is_dir() else []
            raise FileNotFoundError(f"No saved weights {path}. Saved here: {have or 'none'}.")
        self.model.load_weights(str(path))
        if self.precompute:
            self.precompute = True

    # ----------------------------------------------------------------------------- analysis
    def interpret(self, tta: bool = False):
        """An `Interpretation` of the validation predictions (the lesson's plots and selections)."""
        from kit.analysis import Interpretation

        return Interpretation.from_learner(self, tta=tta)

    def __repr__(self) -> str:
        return f"ConvLearner({self.arch.name}, classes={self.data.c}, sz={self.data.sz}, precompute={self.precompute}, frozen_to={self._frozen_to})"
