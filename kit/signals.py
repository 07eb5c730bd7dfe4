"""How the kit's processes stop: a signal always ends a command, and no decoding worker outlives its owner.

`kit.cli.main` runs each command inside `stop_on_signals()`. There SIGINT (Ctrl-C) and SIGTERM (what
Kaggle and job schedulers send before they kill) both raise KeyboardInterrupt in the main thread, so
every cleanup written for Ctrl-C runs for SIGTERM too (the checkpoint kept, temporary files removed,
decoding workers stopped), and the signal is recorded, because an interrupt can be lost on its way:

- one that lands in a garbage-collection callback (JAX registers one, and Keras imports JAX on every
  backend) or in a finalizer is only printed as "Exception ignored"; it is delivered again;
- one that lands in C++ code calling back into Python (pybind11) comes out as an unrelated
  RuntimeError or SystemError; the CLI reports it as the interruption (`StopSignals.signum`).

Outside the context nothing is installed: `import kit` and notebooks keep their own Ctrl-C. A signal
the process was started ignoring (`nohup`, a shell's background job) stays ignored.

Decoding workers call `exit_with_owner` first: they ignore both signals (the process they decode for
decides, and lets the chunks in flight finish) and end with it, even when it is killed with SIGKILL.

Example:
    with stop_on_signals() as stop:
        try:
            run_command()
        except KeyboardInterrupt:
            sys.exit(stop.exit_code)
"""

from __future__ import annotations

import _thread
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator

# The signals that stop a command (and that decoding workers leave to it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Linux's prctl option: the kernel signals a process the moment its parent exits.
PR_SET_PDEATHSIG = 1
# How long after a dropped interrupt it is delivered again, in seconds: time to leave the hook that saw it.
REDELIVER_S = 0.05
# Where pidfd_open is missing (macOS, Linux before 5.3), a worker looks for its owner this often, in seconds.
OWNER_POLL_S = 0.5


class StopSignals:
    """The signal that stopped a command (`signum`, None until one arrives) and its exit status."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.active = True  # until the command's block ends: a delivery after it would hit the caller

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, the shells' convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    def describe(self) -> str:
        """How the command's last line names the stop, e.g. "stopped by SIGTERM (exit code 143 = 128 + 15)"."""
        if self.signum in (None, signal.SIGINT):
            return "interrupted"
        return f"stopped by {signal.Signals(self.signum).name} (exit code {self.exit_code} = 128 + {self.signum})"

    def handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum  # the first one names the stop; another, during the cleanup, only hurries it
        raise KeyboardInterrupt

    def unraisable(self, previous, unraisable) -> None:
        if self.signum is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
            previous(unraisable)
            return
        # Python was about to print and drop our interrupt (raised in a gc callback or a finalizer):
        # deliver it again, from another thread a moment later, once the main thread has left this hook,
        # where it would be dropped too.
        try:
            _thread.start_new_thread(self._deliver_again, ())
        except KeyboardInterrupt:  # an earlier delivery arrived here after all
            _thread.start_new_thread(self._deliver_again, ())

    def _deliver_again(self) -> None:
        time.sleep(REDELIVER_S)
        if self.active:
            _thread.interrupt_main(self.signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """Makes SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, and records which came.

    The previous handlers (and `sys.unraisablehook`) are back once the block ends. Called from
    another thread than the main one it installs nothing, as Python allows handlers only there.
    """
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    # A signal ignored from the start (nohup, `cmd &`) stays so; one whose handler is not Python's is left too.
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    mine = [s for s, h in previous.items() if h not in (signal.SIG_IGN, None)]
    previous_hook = sys.unraisablehook

    def hook(unraisable) -> None:
        stop.unraisable(previous_hook, unraisable)

    for s in mine:
        signal.signal(s, stop.handle)
    sys.unraisablehook = hook
    try:
        yield stop
    finally:
        stop.active = False
        for s in mine:
            signal.signal(s, previous[s])
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous_hook


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one of another user counts; a zombie does not)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill would end the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # On Linux a thread's id answers too (TensorFlow's threads use up ids fast, so an old pid soon
    # names one): only the leader of its thread group is the process `pid`.
    tgid, state = _linux_status(pid)
    return tgid in (None, pid) and state != "Z"


def _linux_status(pid: int) -> tuple[int | None, str | None]:
    """(thread group, state letter) of `pid` from /proc; (None, None) where it cannot be read."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
    except OSError:
        return None, None
    tgid = int(fields["Tgid"][0]) if fields.get("Tgid") else None
    return tgid, fields["State"][0] if fields.get("State") else None


def _die_with_parent() -> None:
    """Asks Linux to SIGKILL this process the moment its parent exits (elsewhere, nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _exit_after(owner: int) -> None:
    """Waits for process `owner` to end (at once through a pidfd on Linux 5.3+, else looking), then exits."""
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):
        # An owner that is the parent has ended once this process is handed to another, even while
        # it waits, a zombie, for its own parent to reap it.
        parent = os.getppid()
        while pid_alive(owner) and (parent != owner or os.getppid() == owner):
            time.sleep(OWNER_POLL_S)
    else:
        select.select([fd], [], [])
    os._exit(1)


def exit_with_owner(owner: int) -> None:
    """A worker's first call: ignore SIGINT and SIGTERM, and exit as soon as process `owner` has ended.

    A forkserver, not `owner`, is the parent of a worker it starts, and it lives as long as its
    children (each holds the pipe whose end tells it to exit): so the worker watches `owner` itself,
    from a daemon thread; a worker whose parent is `owner` is also killed by Linux with it.

    Args:
        owner: int. The process the worker decodes for (the pool's).
    """
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if os.getppid() == owner:
        _die_with_parent()
    threading.Thread(target=_exit_after, args=(owner,), name="kit-owner-watch", daemon=True).start()
