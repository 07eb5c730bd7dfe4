"""`make bench`: issue 7's CPU targets, each a ratio of two timings taken in one run on this machine.

    input_pipeline      kit decode-into-cache + batches delivered, img/s ÷ plain multi-process PIL
                        decode img/s on the same files                                  (≥ 0.8)
    fit_overhead        learn.fit seconds ÷ a bare keras model.fit on the same model, data and
                        epochs, both warmed up, interleaved, median of pairs                     (≤ 1.10)
    precompute_speedup  an epoch through the body ÷ an epoch from the precompute cache   (≥ 20)

Prints the machine, then one line per target: `<name>: <ratio> (target <op> <value>) PASS|FAIL`;
lines starting with `#` are the figures behind each ratio. Exits 1 when a target fails.
Photos are synthetic 500×375 JPEGs of ~40 KB written to a temporary folder (see bench/common.py).

    .venv/bin/python bench/cpu.py [--photos 384] [--train 128] [--valid 64] [--bs 64] [--reps 3] [--arch resnet50] [--model-sz 32] [--reps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import (  # noqa: E402
    Stopwatch,
    alternate,
    cores,
    cpu_model,
    decode_bound,
    make_lesson_folders,
    paired_ratio,
    versions,
    warm_page_cache,
    write_photos,
)

PIPELINE_SZ = 224  # the lesson's size: what the decode bound of ../shared/GPU.md is measured at
PIPELINE_BS = 64
LR = 1e-2


def verdict(name: str, ratio: float, op: str, target: float) -> tuple[str, bool]:
    ok = ratio >= target if op == ">=" else ratio <= target
    return f"{name}: {ratio:.2f} (target {op} {target:g}) {'PASS' if ok else 'FAIL'}", ok


def machine_line() -> str:
    import keras

    backend = keras.backend.backend()
    v = versions("keras", backend)
    libs = " ".join(f"{k} {val}" for k, val in v.items())
    return f"machine: {cpu_model()}, {cores()} cores, backend {backend}; {libs}"


# ------------------------------------------------------------------------------------ 1. input
def bench_pipeline(files: list[Path], work: Path, reps: int) -> list[str]:
    from kit.data.cache import decode_cached, default_workers
    from kit.data.dataset import Batches

    n = len(files)
    warm_page_cache(files)
    deliver: list[float] = []
    decode: list[float] = []

    def kit_pass() -> float:
        cache = Path(tempfile.mkdtemp(dir=work, prefix="cache"))
        try:
            with Stopwatch() as sw_dec:
                images, ok = decode_cached(files, PIPELINE_SZ, cache, progress=False)
            if not ok.all():
                raise RuntimeError(f"the kit could not decode {int((~ok).sum())} of the synthetic photos")
            batches = Batches(images, np.zeros(n, dtype=np.int64), PIPELINE_BS, shuffle=True, seed=len(deliver))
            with Stopwatch() as sw_del:
                got = sum(len(batches[i][0]) for i in range(len(batches)))
                batches.on_epoch_end()
            if got != n:
                raise RuntimeError(f"Batches delivered {got} of {n} images")
            del images, batches
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        decode.append(sw_dec.s)
        deliver.append(sw_del.s)
        return sw_dec.s + sw_del.s

    # One untimed pass each: the first fork and the first memmap pay one-off page faults.
    decode_bound(files, PIPELINE_SZ)
    kit_pass()
    decode.clear(), deliver.clear()
    t = alternate({"bound": lambda: decode_bound(files, PIPELINE_SZ), "kit": kit_pass}, reps)
    bound_ips = n / statistics.median(t["bound"])
    kit_ips = n / statistics.median(t["kit"])
    dec_ips = n / statistics.median(decode)
    del_ips = n / statistics.median(deliver)
    line, _ = verdict("input_pipeline", paired_ratio(t["bound"], t["kit"]), ">=", 0.8)
    return [
        f"#   {n} JPEGs 500x375 ({np.mean([f.stat().st_size for f in files]) / 1e3:.0f} KB) to {PIPELINE_SZ}px, "
        f"{default_workers()} worker processes: plain PIL bound {bound_ips:.0f} img/s; kit decode into cache "
        f"{dec_ips:.0f} img/s ({dec_ips / bound_ips:.2f}x bound), batches of {PIPELINE_BS} delivered from the cache "
        f"{del_ips:.0f} img/s; whole pipeline {kit_ips:.0f} img/s (medians of {reps}; the ratio is the median of "
        f"{reps} back-to-back pairs; augmentation runs inside the model, on the device)",
        line,
    ]


# ------------------------------------------------------------------------------------ 2, 3. model
def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer()


@contextlib.contextmanager
def quiet():
    """Swallows the learner's epoch table and bars, so the bench prints only its own lines."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _learner(data, arch: str):
    import keras

    from kit.training.learner import ConvLearner

    keras.utils.set_random_seed(0)
    return ConvLearner.pretrained(arch, data, precompute=False, weights=None)


def _sgd():
    import keras

    return keras.optimizers.SGD(LR, momentum=0.9)


def _timed_fit(learn, n_epochs: int, steady: list[float]) -> float:
    """Seconds of one `learn.fit`; its epochs after the first (which carries any tracing) go to `steady`."""
    timer = _epoch_timer()
    with quiet(), Stopwatch() as sw:
        learn.fit(LR, n_epochs, callbacks=[timer])
    steady.extend(timer.times[1:])
    return sw.s


def bench_fit_overhead(root: Path, arch: str, sz: int, bs: int, epochs: int, reps: int) -> list[str]:
    from kit.data import ImageClassifierData, tfms_from_model
    from kit.training.learner import nll_loss

    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(arch, sz), bs=bs, progress=False)
    learn = _learner(data, arch)
    # The bare side: the same model built again from the same seed, compiled once, as a Keras user
    # would; fed the same batches (same order: same seed) for the same epochs.
    twin = _learner(data, arch)
    bare = twin.model
    bare.compile(optimizer=_sgd(), loss=nll_loss(), metrics=["accuracy"])
    steady: list[float] = []
    calls = [0]

    def bare_fit() -> float:
        # The learner draws its training order with seed = epochs done so far; so does this.
        trn = data.batches("train", shuffle=True, seed=calls[0] * epochs)
        with Stopwatch() as sw:
            bare.fit(trn, validation_data=data.batches("valid"), epochs=epochs, verbose=0)
        calls[0] += 1
        return sw.s

    _timed_fit(learn, epochs, steady), bare_fit()  # warm-up: trace/compile each once
    t = alternate({"learn": lambda: _timed_fit(learn, epochs, steady), "bare": bare_fit}, reps)
    line, _ = verdict("fit_overhead", paired_ratio(t["learn"], t["bare"]), "<=", 1.10)

    # The lesson's first fits run on the precompute cache: the same comparison for the head alone.
    with quiet():
        learn.precompute = True
        twin.precompute = True  # same body weights and files: read back from the learner's cache
    acts = {s: np.load(learn.activation_path(s)) for s in ("train", "valid")}
    bare_head = twin.head
    bare_head.compile(optimizer=_sgd(), loss=nll_loss(), metrics=["accuracy"])
    head_n = 2 * epochs

    def bare_head_fit() -> float:
        with Stopwatch() as sw:
            bare_head.fit(
                acts["train"],
                data.trn_y,
                batch_size=bs,
                shuffle=True,
                epochs=head_n,
                validation_data=(acts["valid"], data.val_y),
                verbose=0,
            )
        return sw.s

    _timed_fit(learn, head_n, []), bare_head_fit()
    th = alternate({"learn": lambda: _timed_fit(learn, head_n, []), "bare": bare_head_fit}, reps)
    med = {k: statistics.median(v) for k, v in t.items()}
    hmed = {k: statistics.median(v) for k, v in th.items()}
    return [
        f"#   {arch} (weights=None) at {sz}px, frozen body, batch {bs}, {len(data.trn_ds)} train + {len(data.val_ds)} "
        f"valid images, {epochs} epochs per fit, median of {reps}: learn.fit {med['learn']:.2f} s, bare model.fit "
        f"{med['bare']:.2f} s; on the precompute cache ({head_n} epochs of the head): learn.fit {hmed['learn']:.2f} s, "
        f"bare model.fit {hmed['bare']:.2f} s ({paired_ratio(th['learn'], th['bare']):.2f}x)",
        line,
    ]


def bench_precompute(root: Path, arch: str, sz: int, bs: int) -> list[str]:
    from kit.data import ImageClassifierData, tfms_from_model

    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(arch, sz), bs=bs, progress=False)
    learn = _learner(data, arch)
    body: list[float] = []
    _timed_fit(learn, 2, body)
    with quiet(), Stopwatch() as sw_pre:
        learn.precompute = True
    cached: list[float] = []
    _timed_fit(learn, 5, cached)
    body_epoch, cache_epoch = statistics.median(body), statistics.median(cached)
    line, _ = verdict("precompute_speedup", body_epoch / cache_epoch, ">=", 20)
    return [
        f"#   {arch} (weights=None) at {sz}px (the lesson's size), batch {bs}, an epoch of {len(data.trn_ds)} train + "
        f"{len(data.val_ds)} valid images: through the frozen body {body_epoch:.2f} s, from the precompute cache "
        f"{cache_epoch * 1e3:.0f} ms (median of {len(cached)}); the precompute pass itself {sw_pre.s:.2f} s",
        line,
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=384, help="JPEGs for the input-pipeline target")
    ap.add_argument("--train", type=int, default=128, help="training images for the model targets")
    ap.add_argument("--valid", type=int, default=64, help="validation images for the model targets")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--model-sz", type=int, default=32, help="image size for fit_overhead (small: overhead shows most)")
    ap.add_argument("--precompute-sz", type=int, default=224, help="image size for precompute_speedup (the lesson's)")
    ap.add_argument("--precompute-images", type=int, default=72, help="train + valid images for precompute_speedup")
    ap.add_argument("--bs", type=int, default=64, help="the kit's default batch size")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first carries any tracing)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error(f"--epochs must be >= 2 (the first epoch carries tracing). Received {args.epochs}.")
    if args.photos < args.train + args.valid:
        ap.error(f"--photos must be at least --train + --valid ({args.train + args.valid}). Received {args.photos}.")

    print(machine_line(), flush=True)
    t0 = time.perf_counter()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="kit-bench-") as tmp:
        work = Path(tmp)
        root = make_lesson_folders(work / "photos", args.train, args.valid)
        extra = args.photos - args.train - args.valid
        (work / "extra").mkdir()
        write_photos([(work / "extra" / f"{i}.jpg", i % 2) for i in range(extra)], seed=1)
        files = sorted(root.rglob("*.jpg")) + sorted((work / "extra").glob("*.jpg"))
        n_small = args.precompute_images
        small = make_lesson_folders(work / "small", n_small - n_small // 3, n_small // 3, seed=2)
        for part in (
            lambda: bench_pipeline(files, work, args.reps),
            lambda: bench_fit_overhead(root, args.arch, args.model_sz, args.bs, args.epochs, args.reps),
            lambda: bench_precompute(small, args.arch, args.precompute_sz, args.bs),
        ):
            for line in part():
                print(line, flush=True)
                failed += line.endswith(" FAIL")
    print(f"# {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
