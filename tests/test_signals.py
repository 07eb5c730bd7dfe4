"""A signal always stops a command, and a killed run leaves nothing that lives on (issue 19, signals).

The signals are real, sent to `kit train` subprocesses at moments made deterministic: while the model
is built with the main thread inside a garbage-collection callback (where Python drops an interrupt),
while workers decode (half a second a chunk), while a checkpoint is written (its fsync held).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.images import make_folders
from kit.cli import main
from kit.io import TMP_NAME, atomic_path, human_bytes, remove_stale_temporaries
from kit.run import RunFolder
from kit.signals import pid_alive, stop_on_signals

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--arch", "tiny", "--weights", "none", "--size", "32", "--bs", "8", "--lr", "0.01"]
START_S = 120  # a subprocess' imports and first steps, on a busy 2-core machine
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# `kit train` with the tiny arch, SIGINT as a terminal gives it (a background pytest starts it ignored),
# and one deterministic window to send a signal in: argv[1] names it.
RUN = r"""
import dataclasses, gc, os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import kit.data.decode_job as decode_job
from helpers import gate
from helpers.tiny import tiny, tiny_cnn
from kit.models.archs import ARCHS

mode = sys.argv[1]
ARCHS["tiny"] = tiny
if mode == "decode-slowly":
    decode_job.decode_into = gate.decode_at_a_walk
elif mode == "gc-while-building":
    def in_gc(phase, info):  # once: the main thread waits in a gc callback, as in JAX's _xla_gc_callback
        gc.callbacks.remove(in_gc)
        print("building: in a gc callback", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)

    def building(*args, **kwargs):
        gc.callbacks.append(in_gc)
        gc.collect()
        return tiny_cnn(*args, **kwargs)

    ARCHS["tiny"] = dataclasses.replace(tiny, constructor=building)
elif mode.startswith("hold-checkpoint-write:"):
    hold, writes, fsync = int(mode.split(":")[1]), [], os.fsync

    def held_fsync(fd):  # the n-th checkpoint write waits, its temporary file complete, before its fsync
        if "/checkpoint/.last." in os.readlink(f"/proc/self/fd/{fd}"):
            writes.append(fd)
            if len(writes) == hold:
                print(f"writing checkpoint {hold}", file=sys.stderr, flush=True)
                time.sleep(60)
        fsync(fd)

    os.fsync = held_fsync
from kit.cli import main
sys.exit(main(sys.argv[2:]))
"""


class Cli:
    """A `kit` subprocess, its stderr in a file that the test reads while it runs."""

    def __init__(self, tmp_path: Path, mode: str, *args: str):
        n = len(list(tmp_path.glob("stderr-*.txt")))
        self.stderr_path = tmp_path / f"stderr-{n}.txt"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        with open(self.stderr_path, "w") as err:
            self.p = subprocess.Popen(
                [sys.executable, "-c", RUN, mode, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err
            )

    def err(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, what: str, condition, timeout: float = START_S):
        """Polls `condition` until it is true (returned), failing if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if self.p.poll() is not None:
                pytest.fail(
                    f"kit ended (rc {self.p.returncode}) before {what}:\n{self.err()[:1500]}\n...\n{self.err()[-1500:]}"
                )
            time.sleep(0.05)
        self.p.kill()
        pytest.fail(f"no {what} within {timeout} s:\n{self.err()[-3000:]}")

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.p.send_signal(sig)
        return self.p.wait(timeout=timeout)

    def workers(self) -> set[int]:
        """The decoding processes that announced themselves (helpers.gate.decode_at_a_walk)."""
        return {
            int(pid) for pid in re.findall(r"decoding in (\d+)", self.err())
        }  # also after a progress bar, on its line


def _last_line(err: str) -> str:
    """The last line kit printed on stderr, among the progress bars (which the decoding thread may
    still draw, and close, while the interpreter exits)."""
    lines = [line for line in re.split(r"[\r\n]|\x1b\[A", err) if line.startswith("kit ")]
    assert "Traceback" not in err and lines, err[-3000:]
    return lines[-1]


def _ended_within(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(map(pid_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(map(pid_alive, pids))


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*") if TMP_NAME.match(p.name)) if folder.is_dir() else []


def _config(tmp_path: Path, **values) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"tta": False, **values}))
    return str(path)


def _finished_runs(root: Path) -> list[Path]:
    runs = RunFolder.runs_dir(root)
    return [p for p in runs.glob("*") if p.is_dir() and RunFolder(p).finished]


# ------------------------------------------------------------------------------------ Ctrl-C while the model builds


def test_ctrl_c_landing_in_a_gc_callback_still_stops_kit_train(tmp_path):
    """Python only prints an interrupt raised in a gc callback ("Exception ignored in _xla_gc_callback")."""
    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    cli = Cli(
        tmp_path,
        "gc-while-building",
        "train",
        "--folder",
        str(folder),
        *TRAIN,
        "--epochs",
        "1",
        "--config",
        _config(tmp_path, num_workers=1),
    )
    cli.wait_for("the model build", lambda: "building: in a gc callback" in cli.err())
    rc = cli.stop(signal.SIGINT)
    err = cli.err()
    assert rc == 130, err[-3000:]
    assert _last_line(err) == "kit train: interrupted" and "Exception ignored" not in err, err[-3000:]
    assert _finished_runs(folder) == []


# ------------------------------------------------------------------------------------ an interrupt turned into an error


@contextmanager
def _terminal_signals():
    """SIGINT as a terminal gives it, and a SIGTERM that cannot end pytest if the CLI does not handle it."""

    def unhandled(signum, frame):
        raise RuntimeError("SIGTERM reached the test's own handler: the CLI installed none")

    saved = {
        s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, unhandled))
    }
    try:
        yield unhandled
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_error_a_library_raises_instead_of_the_interrupt_is_the_interruption(tmp_path, monkeypatch, capsys, sig):
    """C++ code crossed by the interrupt (pybind11) raises RuntimeError or SystemError instead: exit 130 or 143."""
    import kit.jobs.predict

    def predict_images(inputs, run, out=None):
        try:
            os.kill(os.getpid(), sig)  # a real signal; the CLI's handler raises KeyboardInterrupt here
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError(
                "pybind11::error_already_set: MISMATCH of original and normalized active exception types"
            ) from None
        pytest.fail("the signal did not stop predict")

    monkeypatch.setattr(kit.jobs.predict, "predict_images", predict_images)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    hook = sys.unraisablehook
    with _terminal_signals() as unhandled:
        assert main(["predict", "--folder", str(tmp_path), "--run", "r1", "x.jpg"]) == 128 + sig
        assert (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
            and signal.getsignal(signal.SIGTERM) is unhandled
        )
    assert sys.unraisablehook is hook  # the CLI's handlers lasted as long as the command
    (line,) = capsys.readouterr().err.strip().splitlines()
    how = "interrupted" if sig == signal.SIGINT else "stopped by SIGTERM (exit code 143 = 128 + 15): interrupted"
    assert line == f"kit predict: {how} inside a library, which raised RuntimeError instead"


def test_a_signal_ignored_from_the_start_stays_ignored():
    saved, term = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.getsignal(signal.SIGTERM)  # nohup, `cmd &`
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is not term
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, saved)


# ------------------------------------------------------------------------------------ kills while images decode


@linux_only
def test_sigkill_while_decoding_leaves_no_worker_and_the_next_run_cleans_up_and_stops_on_sigterm(tmp_path):
    folder = make_folders(tmp_path / "f", n_train=150, n_valid=40, size=36)  # 300 + 80 images: 7 s of decoding
    args = ["train", "--folder", str(folder), *TRAIN, "--epochs", "1", "--config", _config(tmp_path, num_workers=2)]
    cache = folder / "tmp"

    killed = Cli(tmp_path, "decode-slowly", *args)
    killed.wait_for("two decoding workers", lambda: len(killed.workers()) >= 2 and _temporaries(cache))
    workers = killed.workers() | _descendants(killed.p.pid)
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _ended_within(workers, 5), "decoding workers outlived their killed parent"
    left = _temporaries(cache)
    assert left and all(f"{killed.p.pid}-" in p.name for p in left)  # named by their writer
    size = sum(p.stat().st_size for p in left)

    # The next run of the folder removes them, saying so, and SIGTERM stops it as Ctrl-C would.
    again = Cli(tmp_path, "decode-slowly", *args)
    line = f"kit train: removed {len(left)} temporary file{'s' if len(left) > 1 else ''} ({human_bytes(size)}) that killed runs left in {folder}"
    again.wait_for("two workers", lambda: len(again.workers()) >= 2)
    assert line in again.err(), (os.listdir(cache), again.err()[:3000])
    assert not any(p.exists() for p in left)
    workers = again.workers() | _descendants(again.p.pid)
    rc = again.stop(signal.SIGTERM)
    err = again.err()
    assert rc == 143, err[-3000:]
    assert _last_line(err) == "kit train: stopped by SIGTERM (exit code 143 = 128 + 15)", err[-3000:]
    assert _temporaries(cache) == [] and _ended_within(workers, 5)


# ------------------------------------------------------------------------------------ kills while a checkpoint is written


@linux_only
def test_kills_while_a_checkpoint_is_written_leave_it_readable_and_nothing_behind(tmp_path):
    from kit.training.callbacks.checkpoint import read_checkpoint_state

    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    cfg = _config(tmp_path, num_workers=1)
    killed = Cli(
        tmp_path, "hold-checkpoint-write:2", "train", "--folder", str(folder), *TRAIN, "--epochs", "3", "--config", cfg
    )
    killed.wait_for("the second checkpoint's write", lambda: "writing checkpoint 2" in killed.err())
    assert killed.stop(signal.SIGKILL) == -signal.SIGKILL
    (run,) = RunFolder.unfinished(folder)
    (left,) = _temporaries(run.checkpoint_dir)
    assert left.name.startswith(".last.") and read_checkpoint_state(run.checkpoint_dir)["history"][-1]["epoch"] == 0

    # Resumed, the killed run's file goes; SIGTERM in the resumed run's first write keeps the checkpoint.
    resumed = Cli(tmp_path, "hold-checkpoint-write:1", "train", "--folder", str(folder), "--resume")
    line = f"kit train: removed 1 temporary file ({human_bytes(left.stat().st_size)}) that killed runs left in {folder}"
    resumed.wait_for("the held write", lambda: "writing checkpoint 1" in resumed.err())
    assert line in resumed.err(), (os.listdir(run.checkpoint_dir), resumed.err()[:3000])
    rc = resumed.stop(signal.SIGTERM)
    err = resumed.err()
    assert rc == 143, err[-3000:]
    assert _last_line(err) == (
        f"kit train: stopped by SIGTERM (exit code 143 = 128 + 15): training interrupted; the checkpoint after epoch 0 is "
        f"{run.checkpoint_dir / 'last.npz'}. Resume with: kit train --folder {folder} --resume {run.name}"
    ), err[-3000:]
    assert _temporaries(run.checkpoint_dir) == [] and not run.finished
    assert read_checkpoint_state(run.checkpoint_dir)["history"][-1]["epoch"] == 0


# ------------------------------------------------------------------------------------ the pure parts


@linux_only
def test_a_thread_or_a_zombie_is_not_a_live_writer():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # ended, not yet reaped
    try:
        assert _ended_within({zombie.pid}, 10)
        assert pid_alive(os.getpid()) and not pid_alive(thread.native_id) and not pid_alive(zombie.pid)
    finally:
        stop.set()
        thread.join()
        zombie.wait()


def test_stale_temporaries_are_those_whose_writer_is_gone(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with atomic_path(tmp_path / "live.npz") as live:
        live.write_bytes(b"written by this process")
        host = TMP_NAME.match(live.name)["host"]
        other = "0000" if host != "0000" else "ffff"
        files = {
            f".dead.{gone.pid}-{host}-0123abcd.tmp.npz": (b"12345", 0),  # its writer has exited: removed
            f".far.{gone.pid}-{other}-0123abcd.tmp.npy": (b"x", 0),  # another machine's, fresh: kept
            f".far_old.{gone.pid}-{other}-0123abcd.tmp.npy": (b"123", 7200),  # and two hours old: removed
            ".last.0123abcd.tmp.npz": (b"1", 0),  # the old format, fresh: kept
            ".last.4567cdef.tmp.npz": (b"1234567", 7200),  # and old: removed
            ".notes.0123abcd.txt": (b"1", 7200),  # not a temporary name: kept
        }
        for name, (data, age) in files.items():
            (tmp_path / name).write_bytes(data)
            os.utime(tmp_path / name, (time.time() - age, time.time() - age))
        assert remove_stale_temporaries([tmp_path, tmp_path / "missing"]) == (3, 5 + 3 + 7)
        assert live.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, f".far.{gone.pid}-{other}-0123abcd.tmp.npy", ".last.0123abcd.tmp.npz", ".notes.0123abcd.txt"]
        )
    assert (tmp_path / "live.npz").exists()


ORPHAN = r"""
import os, signal, sys, time
import kit.signals as signals
del os.pidfd_open  # as where prctl and pidfd_open are missing: the worker's thread looks
signals._die_with_parent = lambda: None
child = os.fork()
if child == 0:
    signals.exit_with_owner(os.getppid())
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(0.3)
os.kill(os.getpid(), signal.SIGKILL)
"""


@linux_only
def test_a_worker_without_prctl_or_pidfd_still_exits_with_its_owner():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True, env=env) as p:
        child = int(p.stdout.readline())
        assert _ended_within({child}, 5)  # while its killed parent is still a zombie, not reaped yet
        assert p.wait(timeout=60) == -signal.SIGKILL
