"""Issue 7's and 10's GPU figures in one command, one JSON line per figure as it is measured (JAX backend;
no TensorFlow needed).

    python bench/gpu.py [--n 25000] [--test 12500] [--sz 224] [--bs 256] [--dir /tmp/kit-gpu-bench]
    python bench/gpu.py --quick        # 4,000 images, no lesson: <= 3 minutes on an H100
    python bench/gpu.py --smoke        # everything tiny, on the CPU, in seconds (the test suite runs it)
    python bench/gpu.py --limit unfrozen_epoch=120 --only keras,torch

Figures, in order: machine, photos, decode_bound (multi-process PIL), precompute (from_paths to every
activation ready, the body running on the cache's chunks while workers decode them; decode_s: when the
last split's cache was complete), head_epochs (from the activation cache), synthetic_uint8 (the same
model without augmentation, fed ready uint8 batches), unfrozen_epoch (from the uint8 cache, always
with the lesson's augmentation, transforms_side_on + max_zoom=1.1; vs_synthetic is the >= 0.9 target),
torch_eager and torch_compile (a plain-PyTorch ResNet50: channels_last, bf16 autocast), compile_cache
(JAX's persistent cache: a fresh process's first step, then a second process's), lesson (precompute,
lr_find, 3 epochs, predict, TTA on valid, test predictions on n + test images). Every line carries
"figure" and "device"; ratios are measured in this one run. Each figure has its own time limit
(LIMITS, --limit): over it, the figure prints {"timed_out": true} and the others still run. A figure
that cannot run says why in "skipped".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX would take 75% of the GPU's memory up front and leave the PyTorch peers none.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the kit, when not installed

import numpy as np  # noqa: E402
from common import cores, cpu_model, decode_bound, make_lesson_folders, versions, warm_page_cache  # noqa: E402

LR = 1e-2
# Each figure's own time limit in seconds (default run / --quick), on one H100 or H200: the whole
# bench fits in 7 minutes, --quick in 3. Over its limit a figure prints "timed_out"; the rest run.
LIMITS = {
    "decode_bound": 30,
    "precompute": 60,
    "head_epochs": 20,
    "synthetic_uint8": 60,
    "unfrozen_epoch": 60,
    "torch_eager": 30,
    "torch_compile": 120,
    "compile_cache": 60,
    "lesson": 90,
}
QUICK_LIMITS = {
    "decode_bound": 10,
    "precompute": 30,
    "head_epochs": 10,
    "synthetic_uint8": 30,
    "unfrozen_epoch": 30,
    "torch_eager": 15,
    "torch_compile": 60,
    "compile_cache": 45,
    "lesson": 60,
}
GROUPS = {
    "bound": ["decode_bound"],
    "keras": ["precompute", "head_epochs", "synthetic_uint8", "unfrozen_epoch"],
    "torch": ["torch_eager", "torch_compile"],
    "cache": ["compile_cache"],
    "lesson": ["lesson"],
}
_DEVICE = {"device": "?"}


class FigureTimeout(Exception):
    """A figure ran past its own time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raises FigureTimeout in the main thread after `seconds` (at the next Python bytecode: a long
    XLA compile is interrupted when it returns)."""

    def expire(signum, frame):
        raise FigureTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def emit(figure: str, **fields) -> None:
    print(json.dumps({"figure": figure, **_DEVICE, **fields}, default=float), flush=True)


def _round(x: float, nd: int = 3) -> float:
    return float(round(x, nd))


# ------------------------------------------------------------------------------------ keras side
def _timer():
    import keras

    class TrainTimer(keras.callbacks.Callback):
        """Per epoch: seconds of the training batches alone (validation excluded), synced at the last batch."""

        def on_train_begin(self, logs=None):
            self.train_s: list[float] = []
            self.epoch_s: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            self._t_last = None

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == self.params.get("steps") and logs and "loss" in logs:
                float(logs["loss"])  # waits for the device: JAX dispatches ahead
                self._t_last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epoch_s.append(now - self._t0)
            self.train_s.append((self._t_last or now) - self._t0)

    return TrainTimer()


def _synthetic_batches(bs: int, sz: int, steps: int):
    import keras

    class Synthetic(keras.utils.PyDataset):
        """`steps` ready uint8 batches (a pool of 4, cycled): the input path costs nothing."""

        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.x = rng.integers(0, 256, (4, bs, sz, sz, 3), dtype=np.uint8)
            self.y = rng.integers(0, 2, (4, bs)).astype(np.int64)

        def __len__(self):
            return steps

        def __getitem__(self, i):
            return self.x[i % 4], self.y[i % 4]

    return Synthetic()


def smoke_arch():
    """A two-conv body with the keras.applications signature: the smoke run's stand-in for ResNet50."""
    import keras

    from kit.models.archs import Arch

    def tiny_cnn(include_top=False, weights=None, input_shape=(32, 32, 3), **kwargs):
        inp = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="early_conv")(inp)
        x = keras.layers.BatchNormalization(name="early_bn")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="late_conv")(x)
        x = keras.layers.BatchNormalization(name="late_bn")(x)
        return keras.Model(inp, keras.layers.ReLU(name="late_relu")(x), name="tiny_cnn")

    return Arch("tiny", tiny_cnn, preprocess="tf", split_at="late")


def _tfms(args, arch, augment: bool = True):
    from kit.data import tfms_from_model, transforms_side_on

    # Always the lesson's augmentation: the fused layer compiles with the model on every backend.
    if not augment:
        return tfms_from_model(arch, args.sz)
    return tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)


def fig_precompute(args, root: Path, ctx: dict) -> None:
    """from_paths to every activation ready, end to end: the body runs on chunks while workers decode."""
    import keras

    from kit.data import ImageClassifierData
    from kit.training.learner import ConvLearner

    arch = smoke_arch() if args.smoke else args.arch
    t0 = time.perf_counter()
    data = ImageClassifierData.from_paths(root, tfms=_tfms(args, arch), bs=args.bs, progress=False)
    t_returned = time.perf_counter() - t0
    jobs = [s.job for s in (data.trn_ds, data.val_ds)]
    overlapped = any(not j.done for j in jobs)
    keras.utils.set_random_seed(0)
    try:
        learn = ConvLearner.pretrained(arch, data, precompute=True, weights=None)
    except BaseException:
        jobs[0].cancel()  # over its limit: its workers stop, rather than slow the next figures down
        raise
    total = time.perf_counter() - t0
    t_decode = max(j.finished_at for j in jobs) - t0
    ctx.update(arch=arch, data=data, learn=learn)
    bound = ctx.get("bound_ips", float("nan"))
    emit(
        "precompute",
        images=args.n,
        seconds=_round(total),
        from_paths_s=_round(t_returned),
        decode_s=_round(t_decode),
        after_decode_s=_round(total - t_decode),
        overlapped=overlapped,
        img_per_s=_round(args.n / total, 1),
        vs_decode_bound=_round((args.n / total) / bound),
        target=">= 0.85",
        decode_vs_bound=_round((args.n / t_decode) / bound),
        decode_target=">= 0.9",
    )


def fig_head_epochs(args, root: Path, ctx: dict) -> None:
    if "learn" not in ctx:
        emit("head_epochs", skipped="needs the precompute figure")
        return
    learn = ctx["learn"]
    timer = _timer()
    learn.fit(LR, args.head_epochs, callbacks=[timer], verbose=False)
    steady = timer.epoch_s[1:] or timer.epoch_s
    emit(
        "head_epochs",
        epochs=args.head_epochs,
        first_epoch_s=_round(timer.epoch_s[0]),
        epoch_s=_round(float(np.median(steady))),
        train_images=len(learn.data.trn_ds),
    )


def _unfrozen_learner(args, root: Path, augment: bool):
    import keras

    from kit.data import ImageClassifierData
    from kit.training.learner import ConvLearner

    arch = smoke_arch() if args.smoke else args.arch
    data = ImageClassifierData.from_paths(root, tfms=_tfms(args, arch, augment), bs=args.bs, progress=False)
    keras.utils.set_random_seed(0)
    learn = ConvLearner.pretrained(arch, data, precompute=False, weights=None)
    learn.unfreeze()
    return learn


def fig_unfrozen_epoch(args, root: Path, ctx: dict) -> None:
    """Two unfrozen epochs from the uint8 cache with the lesson's augmentation; the second is timed."""
    learn = _unfrozen_learner(args, root, augment=True)
    timer = _timer()
    learn.fit(LR, 2, callbacks=[timer], verbose=False)
    n = len(learn.data.trn_ds)
    ips = n / timer.train_s[-1]
    ctx["unfrozen_ips"] = ips
    fields = dict(
        images=n,
        bs=args.bs,
        train_s=_round(timer.train_s[-1]),
        first_epoch_s=_round(timer.epoch_s[0]),
        img_per_s=_round(ips, 1),
        jit_compile=bool(learn.model.jit_compile),
        augmentation=[type(t).__name__ for t in learn.data.trn_tfms.aug_tfms],
    )
    if "synthetic_ips" in ctx:
        fields.update(vs_synthetic=_round(ips / ctx["synthetic_ips"]), target=">= 0.9")
    emit("unfrozen_epoch", **fields)


def fig_synthetic_uint8(args, root: Path, ctx: dict) -> None:
    """The same model without augmentation, fed ready uint8 batches: what the model alone can do."""
    learn = _unfrozen_learner(args, root, augment=False)
    steps = math.ceil(len(learn.data.trn_ds) / args.bs)
    learn._compile(np.array([LR]))  # the learner's own compile (optimizer, XLA), as its fit uses it
    syn = _timer()
    learn.model.fit(_synthetic_batches(args.bs, args.sz, steps), epochs=2, callbacks=[syn], verbose=0)
    n_seen = steps * args.bs
    ips = n_seen / syn.train_s[-1]
    ctx["synthetic_ips"] = ips
    fields = dict(images=n_seen, bs=args.bs, train_s=_round(syn.train_s[-1]), img_per_s=_round(ips, 1))
    if "unfrozen_ips" in ctx:
        fields.update(unfrozen_vs_synthetic=_round(ctx["unfrozen_ips"] / ips), target=">= 0.9")
    emit("synthetic_uint8", **fields)


def compile_probe(args) -> None:
    """One process's compile: a fresh learner's first unfrozen batch (for the compile_cache figure)."""

    from kit.data import ImageClassifierData
    from kit.training.device import default_jit_compile
    from kit.training.learner import ConvLearner

    arch = smoke_arch() if args.smoke else args.arch
    root = Path(args.dir)
    data = ImageClassifierData.from_paths(root, tfms=_tfms(args, arch), bs=args.bs, progress=False)
    learn = ConvLearner.pretrained(arch, data, precompute=False, weights=None)
    learn.unfreeze()
    t0 = time.perf_counter()
    learn.model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=default_jit_compile()
    )  # as the learner does
    learn.model.fit(_synthetic_batches(args.bs, args.sz, 1), epochs=1, verbose=0)
    print(json.dumps({"first_step_s": time.perf_counter() - t0}), flush=True)


def fig_compile_cache(args, root: Path, ctx: dict) -> None:
    """JAX's persistent compilation cache: a first-step compile in a fresh process, then again from the cache."""
    import subprocess

    import keras

    if keras.backend.backend() != "jax":
        emit("compile_cache", skipped="only JAX has a persistent compilation cache through Keras")
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="kit-xla-cache-", dir=args.dir) as cache:
        env = {**os.environ, "KIT_COMPILATION_CACHE": cache}
        argv = [
            sys.executable,
            __file__,
            "--compile-probe",
            "--dir",
            str(root),
            "--sz",
            str(args.sz),
            "--bs",
            str(args.bs),
            "--arch",
            args.arch,
            "--mixed-precision",
            args.mixed_precision,
        ] + (["--smoke"] if args.smoke else [])
        for _ in range(2):
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1])["first_step_s"])
        size_mb = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 1e6
    emit(
        "compile_cache",
        first_run_s=_round(runs[0]),
        second_run_s=_round(runs[1]),
        cache_mb=_round(size_mb, 1),
        note="first step of a fresh process (compile + 1 batch), cache off in the main bench",
    )


def lesson_figure(args, root: Path) -> None:
    """The lesson end to end on fresh caches: each step's seconds and the total."""
    import keras

    from kit.data import ImageClassifierData
    from kit.training.learner import ConvLearner

    arch = smoke_arch() if args.smoke else args.arch
    steps: dict[str, float] = {}
    t_all = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = _round(now - t)
        t = now

    data = ImageClassifierData.from_paths(root, tfms=_tfms(args, arch), bs=args.bs, test_name="test", progress=False)
    lap("decode")
    keras.utils.set_random_seed(1)
    learn = ConvLearner.pretrained(arch, data, precompute=True, weights=None)
    lap("precompute")
    learn.lr_find(num_it=5 if args.smoke else None)
    lap("lr_find")
    learn.fit(LR, 3, verbose=False)
    lap("fit_3_epochs")
    learn.precompute = False
    log_preds = learn.predict()
    lap("predict")
    tta, y = learn.TTA()
    lap("tta_valid")
    test_preds = learn.predict(is_test=True)
    lap("test_predictions")
    acc = float((np.exp(tta).mean(0).argmax(1) == y).mean())
    emit(
        "lesson",
        train=len(data.trn_ds),
        valid=len(data.val_ds),
        test=len(test_preds),
        seconds=_round(time.perf_counter() - t_all),
        target="< 60 s",
        steps=steps,
        tta_accuracy=_round(acc),
        predict_shape=list(log_preds.shape),
    )


# ------------------------------------------------------------------------------------ torch peers
def torch_resnet(blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), num_classes: int = 2):
    """A plain-PyTorch ResNet (torchvision's v1.5 bottleneck layout; ResNet50 by default)."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.skip = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for i, (n, w) in enumerate(zip(blocks, widths)):
        for j in range(n):
            layers.append(Bottleneck(cin, w, 2 if (j == 0 and i > 0) else 1))
            cin = w * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def torch_figure(args, compiled: bool) -> None:
    name = "torch_compile" if compiled else "torch_eager"
    try:
        import torch
    except ImportError:
        emit(name, skipped="torch is not installed")
        return
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import torchvision

        model_fn, source = (
            (lambda: torchvision.models.resnet50(num_classes=2)),
            f"torchvision {torchvision.__version__}",
        )
    except ImportError:
        model_fn, source = torch_resnet, "plain torch ResNet50 (torchvision absent)"
    if args.smoke:
        model_fn, source = (lambda: torch_resnet((1, 1, 1, 1), (8, 8, 16, 16))), "plain torch tiny ResNet (--smoke)"
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
    bs, sz = args.bs, args.sz
    # uint8 on the wire, as the kit feeds Keras; cast and normalised on the device.
    x8 = torch.randint(0, 256, (bs, 3, sz, sz), dtype=torch.uint8, device=dev).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 2, (bs,), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run(compiled: bool) -> dict:
        torch.manual_seed(0)
        model = model_fn().to(dev, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        net = torch.compile(model) if compiled else model

        def step():
            x = ((x8.float() - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        sync()
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        train_ips = args.steps * bs / (time.perf_counter() - t0)
        net.eval()
        xi = torch.randint(0, 256, (args.infer_bs, 3, sz, sz), dtype=torch.uint8, device=dev).contiguous(
            memory_format=torch.channels_last
        )
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            for _ in range(args.warmup):
                net((xi.float() - mean) / std)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                net((xi.float() - mean) / std)
            sync()
        infer_ips = args.steps * args.infer_bs / (time.perf_counter() - t0)
        return dict(
            model=source,
            bs=bs,
            train_img_per_s=_round(train_ips, 1),
            infer_bs=args.infer_bs,
            infer_img_per_s=_round(infer_ips, 1),
            warmup_s=_round(warm_s),
            torch=torch.__version__,
            channels_last=True,
            autocast="bfloat16",
        )

    if not compiled:
        emit(name, **run(False))
    elif args.smoke:
        emit(name, skipped="torch.compile is skipped in --smoke (a C++ toolchain and a minute of compiling)")
    else:
        try:
            emit(name, **run(True))
        except FigureTimeout:
            raise
        except Exception as e:  # noqa: BLE001 -- a peer that cannot compile here is a note, not a crash
            emit(name, skipped=f"{type(e).__name__}: {e}"[:500])


# ------------------------------------------------------------------------------------ main
def scaling_figure(args, root: Path) -> None:
    """Issue 12: an unfrozen epoch on 1, 2, 4, ... N accelerators (bs per device fixed, so the global
    batch is args.bs × n) and the scaling ratio, img/s on n devices ÷ (n × img/s on one). Target:
    >= 0.9 on 2. On a machine with fewer than two accelerators it says so and skips."""
    import keras

    from kit.data import ImageClassifierData
    from kit.training.distribute import list_devices
    from kit.training.learner import ConvLearner

    accelerators = [d for d in list_devices() if d.accelerator]
    if len(accelerators) < 2:
        emit("unfrozen_epoch_scaling", skipped=f"{len(accelerators)} accelerator(s) here: scaling needs 2 or more")
        return
    counts = sorted(
        {2**k for k in range(len(accelerators).bit_length()) if 2**k <= len(accelerators)} | {len(accelerators)}
    )
    arch = smoke_arch() if args.smoke else args.arch
    ips, line = {}, ""
    for n in counts:
        data = ImageClassifierData.from_paths(root, tfms=_tfms(args, arch), bs=args.bs * n, progress=False)
        keras.utils.set_random_seed(0)
        learn = ConvLearner.pretrained(arch, data, precompute=False, weights=None, devices=n)
        learn.unfreeze()
        timer = _timer()
        learn.fit(LR, 2, callbacks=[timer], verbose=False)
        ips[n], line = len(data.trn_ds) / timer.train_s[-1], learn.device_line
    emit(
        "unfrozen_epoch_scaling",
        devices=line,
        bs_per_device=args.bs,
        img_per_s={str(n): _round(v, 1) for n, v in ips.items()},
        scaling={str(n): _round(ips[n] / (n * ips[1])) for n in counts},
        target=">= 0.9 on 2",
    )


def parse(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="everything tiny, on the CPU, in seconds")
    ap.add_argument("--n", type=int, default=25_000, help="labelled images (the lesson: 23,000 train + 2,000 valid)")
    ap.add_argument("--test", type=int, default=12_500, help="unlabelled test images")
    ap.add_argument("--valid", type=int, default=None, help="validation images (default: 2,000 of 25,000, pro rata)")
    ap.add_argument("--sz", type=int, default=224)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--infer-bs", type=int, default=512)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each PyTorch peer")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    ap.add_argument("--mixed-precision", default="auto", help="auto (bf16 where fast), bf16, fp16 or float32")
    ap.add_argument("--dir", default=None, help="where to write the photos (default: a temporary folder)")
    ap.add_argument(
        "--only",
        default=None,
        help=f"comma-separated figures or groups: {','.join(GROUPS)} or any of {','.join(LIMITS)}",
    )
    ap.add_argument("--quick", action="store_true", help="fewer images and steps, no lesson: <= 3 minutes on a GPU")
    ap.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="FIGURE=SECONDS",
        help="a figure's own time limit (repeatable); over it the figure prints timed_out and the rest run",
    )
    ap.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.test, args.sz, args.bs, args.infer_bs = 48, 16, 32, 16, 16
        args.steps, args.warmup, args.head_epochs = 2, 1, 2
    elif args.quick:
        args.n, args.test = min(args.n, 4_000), min(args.test, 1_000)
        args.steps, args.warmup, args.head_epochs = min(args.steps, 15), min(args.warmup, 3), 1
    args.limits = dict(QUICK_LIMITS if args.quick else LIMITS)
    if args.smoke:  # a busy 2-core CPU, not a GPU: room for XLA's CPU compiles
        args.limits = {k: max(v, 120) for k, v in args.limits.items()}
    for item in args.limit:
        name, _, secs = item.partition("=")
        if name not in LIMITS:
            ap.error(f"--limit names a figure of {sorted(LIMITS)}. Received --limit={item}.")
        try:
            args.limits[name] = float(secs)
        except ValueError:
            ap.error(f"--limit needs FIGURE=SECONDS. Received --limit={item}.")
    if args.valid is None:
        args.valid = max(2, round(args.n * 2_000 / 25_000))
    for name in ("n", "sz", "bs", "steps", "warmup", "head_epochs", "infer_bs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1. Received {getattr(args, name)}.")
    if not 2 <= args.valid < args.n - 1:
        ap.error(f"--valid must be in [2, --n - 2]. Received --valid={args.valid} with --n={args.n}.")
    return args


def run_figure(name: str, fn, limit_s: float) -> bool:
    """Runs one figure under its own limit; True when it failed (an error line was printed)."""
    t0 = time.perf_counter()
    try:
        with time_limit(limit_s):
            fn()
    except FigureTimeout:
        emit(name, timed_out=True, limit_s=limit_s, seconds=_round(time.perf_counter() - t0))
    except Exception as e:  # noqa: BLE001 -- one broken figure must not cost the others' GPU time
        emit(f"error_{name}", error=f"{type(e).__name__}: {e}"[:1000], trace=traceback.format_exc()[-2000:])
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.compile_probe:
        compile_probe(args)
        return 0
    import keras

    from kit.training.device import accelerator, resolve_mixed_precision

    acc = accelerator()
    _DEVICE["device"] = acc.name
    policy = resolve_mixed_precision(args.mixed_precision)
    keras.config.set_dtype_policy(policy)  # for the models the benchmarks build themselves
    emit(
        "machine",
        backend=keras.backend.backend(),
        platform=acc.platform,
        capability=acc.capability,
        dtype_policy=policy,
        cpu=cpu_model(),
        cores=cores(),
        smoke=args.smoke,
        quick=args.quick,
        limits=args.limits,
        versions=versions("keras", keras.backend.backend(), "torch"),
    )
    only = set()
    for item in (args.only or ",".join(GROUPS)).split(","):
        only |= set(GROUPS.get(item, [item]))
    if args.quick and not args.only:
        only.discard("lesson")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="kit-gpu-bench-", dir=args.dir) as tmp:
        t0 = time.perf_counter()
        root = make_lesson_folders(Path(tmp) / "photos", args.n - args.valid, args.valid, n_test=args.test)
        files = sorted((root / "train").rglob("*.jpg")) + sorted((root / "valid").rglob("*.jpg"))
        emit(
            "photos",
            images=len(files),
            test=args.test,
            seconds=_round(time.perf_counter() - t0),
            mean_kb=_round(float(np.mean([f.stat().st_size for f in files[:500]])) / 1e3, 1),
        )
        warm_page_cache(files)
        ctx: dict = {}

        def bound() -> None:
            decode_bound(files[: min(len(files), 256)], args.sz)  # warm the pool's first fork
            dt = decode_bound(files, args.sz)
            ctx["bound_ips"] = len(files) / dt
            emit(
                "decode_bound",
                images=len(files),
                processes=cores(),
                seconds=_round(dt),
                img_per_s=_round(ctx["bound_ips"], 1),
            )

        def lesson() -> None:
            # The lesson decodes again: its time includes building the uint8 caches.
            shutil.rmtree(root / "tmp", ignore_errors=True)
            lesson_figure(args, root)

        figures = {
            "decode_bound": bound,
            "precompute": lambda: fig_precompute(args, root, ctx),
            "head_epochs": lambda: fig_head_epochs(args, root, ctx),
            "synthetic_uint8": lambda: fig_synthetic_uint8(args, root, ctx),
            "unfrozen_epoch": lambda: fig_unfrozen_epoch(args, root, ctx),
            "torch_eager": lambda: torch_figure(args, compiled=False),
            "torch_compile": lambda: torch_figure(args, compiled=True),
            "compile_cache": lambda: fig_compile_cache(args, root, ctx),
            "lesson": lesson,
        }
        for name, fn in figures.items():
            if name in only:
                failed += run_figure(name, fn, args.limits[name])
        if "unfrozen_epoch" in only:  # issue 12: the same epoch on every device count
            failed += run_figure(
                "unfrozen_epoch_scaling", lambda: scaling_figure(args, root), 3 * args.limits["unfrozen_epoch"]
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
