"""Issue 7's GPU figures in one command, one JSON line per figure (JAX backend; no TensorFlow needed).

    python bench/gpu.py [--n 25000] [--test 12500] [--sz 224] [--bs 256] [--dir /tmp/kit-gpu-bench]
    python bench/gpu.py --smoke        # everything tiny, on the CPU, in seconds (the test suite runs it)

Figures, in order: machine, decode_bound (multi-process PIL), precompute (the kit's decode cache +
body), head_epochs (from the activation cache), unfrozen_epoch (from the uint8 cache with augmentation)
against synthetic_uint8 (the same compiled Keras model fed ready uint8 batches), torch_eager and
torch_compile (a plain-PyTorch ResNet50: channels_last, bf16 autocast), lesson (precompute, lr_find,
3 epochs, predict, TTA on valid, test predictions on n + test images). Every line carries "figure"
and "device"; ratios are measured in this one run. A figure that cannot run says why in "skipped".
"""
from __future__ import annotations

import argparse
import json
import math
import os
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
_DEVICE = {"device": "?"}


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


def _tfms(args, arch):
    from kit.data import RandomFlip, tfms_from_model, transforms_side_on

    if args.smoke:
        # XLA compiles rotation and zoom for minutes on a busy CPU; a flip proves the path as well.
        return tfms_from_model(arch, args.sz, aug_tfms=[RandomFlip()])
    return tfms_from_model(arch, args.sz, aug_tfms=transforms_side_on, max_zoom=1.1)


def keras_figures(args, root: Path, bound_ips: float) -> None:
    import keras

    from kit.data import ImageClassifierData
    from kit.training.learner import ConvLearner

    arch = smoke_arch() if args.smoke else args.arch
    n_imgs = args.n
    tfms = _tfms(args, arch)
    t0 = time.perf_counter()
    data = ImageClassifierData.from_paths(root, tfms=tfms, bs=args.bs, progress=False)
    t_decode = time.perf_counter() - t0
    keras.utils.set_random_seed(0)
    learn = ConvLearner.pretrained(arch, data, precompute=False, weights=None)
    t0 = time.perf_counter()
    learn.precompute = True
    t_body = time.perf_counter() - t0
    total = t_decode + t_body
    emit("precompute", images=n_imgs, decode_s=_round(t_decode), body_s=_round(t_body), seconds=_round(total),
         img_per_s=_round(n_imgs / total, 1), vs_decode_bound=_round((n_imgs / total) / bound_ips), target=">= 0.85")

    timer = _timer()
    learn.fit(LR, args.head_epochs, callbacks=[timer], verbose=False)
    steady = timer.epoch_s[1:] or timer.epoch_s
    emit("head_epochs", epochs=args.head_epochs, first_epoch_s=_round(timer.epoch_s[0]),
         epoch_s=_round(float(np.median(steady))), train_images=len(data.trn_ds))

    learn.unfreeze()
    timer = _timer()
    learn.fit(LR, 2, callbacks=[timer], verbose=False)
    steps = math.ceil(len(data.trn_ds) / args.bs)
    n_seen = steps * args.bs
    kit_s = timer.train_s[-1]
    # The same compiled model and optimizer, fed ready uint8 batches: what the model alone can do.
    syn = _timer()
    learn.model.fit(_synthetic_batches(args.bs, args.sz, steps), epochs=2, callbacks=[syn], verbose=0)
    syn_s = syn.train_s[-1]
    emit("unfrozen_epoch", images=len(data.trn_ds), bs=args.bs, train_s=_round(kit_s), first_epoch_s=_round(timer.epoch_s[0]),
         img_per_s=_round(len(data.trn_ds) / kit_s, 1), vs_synthetic=_round((len(data.trn_ds) / kit_s) / (n_seen / syn_s)),
         target=">= 0.9", augmentation=[type(t).__name__ for t in tfms[0].aug_tfms])
    emit("synthetic_uint8", images=n_seen, bs=args.bs, train_s=_round(syn_s), img_per_s=_round(n_seen / syn_s, 1))


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
    emit("lesson", train=len(data.trn_ds), valid=len(data.val_ds), test=len(test_preds), seconds=_round(time.perf_counter() - t_all),
         target="< 60 s", steps=steps, tta_accuracy=_round(acc), predict_shape=list(log_preds.shape))


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
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = widths[0]
    for i, (n, w) in enumerate(zip(blocks, widths)):
        for j in range(n):
            layers.append(Bottleneck(cin, w, 2 if (j == 0 and i > 0) else 1))
            cin = w * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def torch_figures(args) -> None:
    try:
        import torch
    except ImportError:
        emit("torch_eager", skipped="torch is not installed")
        emit("torch_compile", skipped="torch is not installed")
        return
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        import torchvision

        model_fn, source = (lambda: torchvision.models.resnet50(num_classes=2)), f"torchvision {torchvision.__version__}"
    except ImportError:
        model_fn, source = torch_resnet, "plain torch ResNet50 (torchvision absent)"
    if args.smoke:
        model_fn, source = (lambda: torch_resnet((1, 1, 1, 1), (8, 8, 16, 16))), "plain torch tiny ResNet (--smoke)"
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
    bs, sz = args.bs, args.sz
    # uint8 on the wire, as the kit feeds Keras; cast and normalised on the device.
    x8 = torch.randint(0, 256, (bs, 3, sz, sz), dtype=torch.uint8, device=dev).contiguous(memory_format=torch.channels_last)
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
        xi = torch.randint(0, 256, (args.infer_bs, 3, sz, sz), dtype=torch.uint8, device=dev).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            for _ in range(args.warmup):
                net((xi.float() - mean) / std)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                net((xi.float() - mean) / std)
            sync()
        infer_ips = args.steps * args.infer_bs / (time.perf_counter() - t0)
        return dict(model=source, bs=bs, train_img_per_s=_round(train_ips, 1), infer_bs=args.infer_bs,
                    infer_img_per_s=_round(infer_ips, 1), warmup_s=_round(warm_s), torch=torch.__version__,
                    channels_last=True, autocast="bfloat16")

    emit("torch_eager", **run(False))
    if args.smoke:
        emit("torch_compile", skipped="torch.compile is skipped in --smoke (a C++ toolchain and a minute of compiling)")
    else:
        try:
            emit("torch_compile", **run(True))
        except Exception as e:  # noqa: BLE001 -- a peer that cannot compile here is a note, not a crash
            emit("torch_compile", skipped=f"{type(e).__name__}: {e}"[:500])


# ------------------------------------------------------------------------------------ main
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
    ap.add_argument("--only", default=None, help="comma-separated figures: bound,keras,torch,lesson")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.test, args.sz, args.bs, args.infer_bs = 48, 16, 32, 16, 16
        args.steps, args.warmup, args.head_epochs = 2, 1, 2
    if args.valid is None:
        args.valid = max(2, round(args.n * 2_000 / 25_000))
    for name in ("n", "sz", "bs", "steps", "warmup", "head_epochs", "infer_bs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1. Received {getattr(args, name)}.")
    if not 2 <= args.valid < args.n - 1:
        ap.error(f"--valid must be in [2, --n - 2]. Received --valid={args.valid} with --n={args.n}.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import keras

    from kit.training.device import accelerator, configure

    acc = accelerator()
    _DEVICE["device"] = acc.name
    policy = configure(args.mixed_precision)
    emit("machine", backend=keras.backend.backend(), platform=acc.platform, capability=acc.capability, dtype_policy=policy,
         cpu=cpu_model(), cores=cores(), smoke=args.smoke, versions=versions("keras", keras.backend.backend(), "torch"))
    only = set((args.only or "bound,keras,torch,lesson").split(","))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="kit-gpu-bench-", dir=args.dir) as tmp:
        t0 = time.perf_counter()
        root = make_lesson_folders(Path(tmp) / "photos", args.n - args.valid, args.valid, n_test=args.test)
        files = sorted((root / "train").rglob("*.jpg")) + sorted((root / "valid").rglob("*.jpg"))
        emit("photos", images=len(files), test=args.test, seconds=_round(time.perf_counter() - t0),
             mean_kb=_round(float(np.mean([f.stat().st_size for f in files[:500]])) / 1e3, 1))
        warm_page_cache(files)
        bound_ips = float("nan")
        figures = [("bound", None), ("keras", keras_figures), ("torch", torch_figures), ("lesson", lesson_figure)]
        for name, fn in figures:
            if name not in only:
                continue
            try:
                if name == "bound":
                    decode_bound(files[: min(len(files), 256)], args.sz)  # warm the pool's first fork
                    dt = decode_bound(files, args.sz)
                    bound_ips = len(files) / dt
                    emit("decode_bound", images=len(files), processes=cores(), seconds=_round(dt), img_per_s=_round(bound_ips, 1))
                elif name == "keras":
                    fn(args, root, bound_ips)
                elif name == "torch":
                    fn(args)
                else:
                    # The lesson decodes again: its time includes building the uint8 caches.
                    for cache in root.glob("tmp"):
                        import shutil

                        shutil.rmtree(cache)
                    fn(args, root)
            except Exception as e:  # noqa: BLE001 -- one broken figure must not cost the others' GPU time
                failed += 1
                emit(f"error_{name}", error=f"{type(e).__name__}: {e}"[:1000], trace=traceback.format_exc()[-2000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
