"""Stand-ins for `decode_into` that decoding worker processes import by name: a gate, slow ones, a dead one.

A test puts one in place with `monkeypatch.setattr(kit.data.decode_job, "decode_into", ...)`; the
pool sends it to the workers by its name, so it lives here, in a module they can import.
"""

import os
import sys
import time
from pathlib import Path

from kit.data.images import decode_into

# A file in the cache folder: until it exists, every chunk but the first waits (at most GATE_TIMEOUT_S).
GATE = "gate"
GATE_TIMEOUT_S = 30.0


def open_gate(cache_dir: Path) -> None:
    (Path(cache_dir) / GATE).touch()


def decode_after_gate(paths: list[str], sz: int, out_path: str, start: int, header_len: int) -> list[tuple[int, str]]:
    """`decode_into`; chunks after the first wait until the test opens the gate."""
    if start > 0:
        gate = Path(out_path).parent / GATE
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    return decode_into(paths, sz, out_path, start, header_len)


def decode_slowly(paths: list[str], sz: int, out_path: str, start: int, header_len: int) -> list[tuple[int, str]]:
    """`decode_into`, a tenth of a second per chunk."""
    time.sleep(0.1)
    return decode_into(paths, sz, out_path, start, header_len)


def decode_at_a_walk(paths: list[str], sz: int, out_path: str, start: int, header_len: int) -> list[tuple[int, str]]:
    """`decode_into`, half a second per chunk, first saying on stderr which process decodes it ("decoding in <pid>")."""
    print(f"decoding in {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(0.5)
    return decode_into(paths, sz, out_path, start, header_len)


def die_after_first(paths: list[str], sz: int, out_path: str, start: int, header_len: int) -> list[tuple[int, str]]:
    """`decode_into` for the first chunk; a worker given any other dies, as one killed by the OOM killer."""
    if start > 0:
        os._exit(1)
    return decode_into(paths, sz, out_path, start, header_len)
