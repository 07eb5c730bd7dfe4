"""Reads PyTorch checkpoint files as numpy arrays, without torch.

`torch.save` has two formats. The legacy one (torch < 1.6, or
`_use_new_zipfile_serialization=False`) is a stream of pickles: a magic
number, a protocol version, a sys-info dict, the main pickle (tensors refer
to storages by persistent id), the sorted list of storage keys, then each
storage's raw bytes preceded by its element count. The zip format (the
default since torch 1.6) holds the same main pickle as `*/data.pkl` and each
storage as `*/data/<key>`. Both are read here with a restricted unpickler
that resolves only the few globals a state_dict needs, so a checkpoint can
never run pickled code.

Example:

```python
state = load_state_dict("efficientnet-lite0-57934424.pth")
state["_conv_stem.weight"].shape  # (32, 3, 3, 3)
```
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

# torch/serialization.py: MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> numpy dtype of one element. bfloat16 has no numpy
# dtype: it is read as uint16 and widened to float32 (exact) when rebuilt.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexDoubleStorage": "c16",
    "ComplexFloatStorage": "c8",
    "UntypedStorage": "u1",
}


class _StorageType:
    """Stands for a `torch.<Name>Storage` class named in a pickle."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """One storage's bytes, filled in once the stream reaches them.

    A storage view (written by torch < 0.4) is a slice of a root storage.
    """

    def __init__(
        self, name: str, key: str, numel: int, byteorder: str, root: _Storage | None = None, root_offset: int = 0
    ):
        self.name = name
        self.key = key
        self.numel = numel
        self.dtype = np.dtype(STORAGE_DTYPES[name]).newbyteorder(byteorder)
        self.root = root
        self.root_offset = root_offset
        self._array: np.ndarray | None = None

    def set_bytes(self, data: bytes, source: str) -> None:
        expected = self.numel * self.dtype.itemsize
        if len(data) != expected:
            raise ValueError(
                f"{source}: storage {self.key!r} ({self.name}) should hold {expected} bytes "
                f"({self.numel} elements), but the file gives {len(data)}; the file is truncated "
                "or corrupt."
            )
        self._array = np.frombuffer(data, dtype=self.dtype)

    def array(self) -> np.ndarray | None:
        if self.root is not None:
            flat = self.root.array()
            return None if flat is None else flat[self.root_offset : self.root_offset + self.numel]
        return self._array


class _PendingTensor:
    """A tensor whose storage bytes may not have been read yet."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self, source: str) -> np.ndarray:
        flat = self.storage.array()
        if flat is None:
            raise ValueError(f"{source}: storage {self.storage.key!r} is referenced but never written.")
        # The furthest element the view touches must lie inside the storage.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            last = self.offset - 1
        if self.offset < 0 or any(s < 0 for s in self.stride) or last >= flat.size:
            raise ValueError(
                f"{source}: a tensor (offset={self.offset}, size={self.size}, stride={self.stride}) "
                f"reaches outside its storage of {flat.size} elements; the file is corrupt."
            )
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        # A copy owns its memory, is C-contiguous and native-endian.
        out = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")
        if self.storage.name == "BFloat16Storage":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Our stand-in for torch._utils._rebuild_tensor_v2 (same arguments)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v2 expects a storage, received {type(storage).__name__}.")
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Our stand-in for torch._utils._rebuild_parameter: a Parameter is its tensor."""
    return data


# The only globals a state_dict pickle may name. Anything else is refused.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS` and `torch.*Storage`; storages come via `persistent_load`."""

    def __init__(self, file, source: str, storages: dict | None = None, byteorder: str = "<", reader=None):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages = storages
        self.byteorder = byteorder
        self.reader = reader

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to load global '{module}.{name}'. Only tensors in "
            f"(ordered) dicts are read; allowed globals: "
            f"{sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS)} and torch.<Type>Storage."
        )

    def persistent_load(self, pid: Any) -> Any:
        if self.storages is None or not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}.")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise pickle.UnpicklingError(
                f"{self.source}: refusing persistent id of kind {kind!r}; only 'storage' is read "
                "(a whole pickled nn.Module is not a state_dict)."
            )
        # legacy: (storage, type, key, location, numel, view_metadata); zip: no view_metadata.
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self.source}: persistent id names no storage type: {pid!r}.")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(storage_type.name, key, int(numel), self.byteorder)
            self.storages[key] = storage
            if self.reader is not None:
                storage.set_bytes(self.reader(key, storage), self.source)
        if view is not None:
            view_key, offset, view_size = view
            return _Storage(storage.name, str(view_key), int(view_size), self.byteorder, storage, int(offset))
        return storage


def _materialize(obj: Any, source: str) -> Any:
    """Replaces every pending tensor in nested dicts/lists/tuples by its numpy array."""
    if isinstance(obj, _PendingTensor):
        return obj.materialize(source)
    if isinstance(obj, _Storage):
        raise ValueError(f"{source}: holds a bare storage; only tensors are read.")
    if isinstance(obj, dict):
        return type(obj)((k, _materialize(v, source)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_materialize(v, source) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, source) for v in obj)
    return obj


def _load_legacy(f: io.BufferedReader, source: str) -> Any:
    def small_pickle(what: str) -> Any:
        try:
            return _RestrictedUnpickler(f, source).load()
        except (EOFError, pickle.UnpicklingError, ValueError) as err:
            raise ValueError(f"{source}: cannot read the {what} of a torch legacy file: {err}") from err

    magic = small_pickle("magic number")
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(
            f"{source}: not a torch checkpoint: expected the legacy magic number "
            f"{LEGACY_MAGIC_NUMBER:#x} or a zip archive, received {magic!r}."
        )
    protocol = small_pickle("protocol version")
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ValueError(
            f"{source}: unsupported torch legacy protocol version; expected "
            f"{LEGACY_PROTOCOL_VERSION}, received {protocol!r}."
        )
    sys_info = small_pickle("sys info")
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"

    storages: dict[str, _Storage] = {}
    obj = _RestrictedUnpickler(f, source, storages, byteorder).load()
    keys = small_pickle("storage key list")
    if not isinstance(keys, list):
        raise ValueError(f"{source}: the storage key list is a {type(keys).__name__}, not a list.")
    count = struct.Struct(byteorder + "q")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"{source}: storage key {key!r} is listed but no tensor uses it.")
        header = f.read(count.size)
        if len(header) != count.size:
            raise ValueError(f"{source}: the file ends before storage {key!r}; it is truncated.")
        (numel,) = count.unpack(header)
        if numel != storage.numel:
            raise ValueError(
                f"{source}: storage {key!r} should hold {storage.numel} elements, "
                f"but its header says {numel}; the file is corrupt."
            )
        storage.set_bytes(f.read(numel * storage.dtype.itemsize), source)
    return _materialize(obj, source)


def _load_zip(path: str, source: str) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(
                f"{source}: a zip file but not a torch checkpoint: expected one '*/data.pkl', found {len(pkl)}."
            )
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            byteorder = "<" if zf.read(prefix + "byteorder").strip() == b"little" else ">"

        def reader(key: str, storage: _Storage) -> bytes:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise ValueError(f"{source}: storage record {name!r} is missing from the archive.")
            return zf.read(name)

        with zf.open(pkl[0]) as fp:
            obj = _RestrictedUnpickler(io.BytesIO(fp.read()), source, {}, byteorder, reader).load()
    return _materialize(obj, source)


def load(path: str | os.PathLike) -> Any:
    """Reads a `torch.save` file, giving numpy arrays where it held tensors.

    Both the legacy (non-zip) and the zip format are read. Only containers of
    tensors are accepted (dicts, OrderedDicts, lists, tuples, numbers,
    strings); any other pickled global is refused with `pickle.UnpicklingError`.

    Example:

    ```python
    obj = load("checkpoint.pth")
    ```

    Args:
        path: str or PathLike. The file written by `torch.save`.

    Returns:
        The saved object, with every tensor as a C-contiguous numpy array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no such file: path={path!r}.")
    if zipfile.is_zipfile(path):
        return _load_zip(path, path)
    with open(path, "rb") as f:
        return _load_legacy(f, path)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict file into a dict of numpy arrays, without torch.

    Example:

    ```python
    state = load_state_dict("efficientnet-lite0-57934424.pth")
    state["_fc.bias"].shape  # (1000,)
    ```

    Args:
        path: str or PathLike. A state_dict saved with `torch.save`.

    Returns:
        dict mapping each parameter/buffer name to a numpy array, in file order.
    """
    obj = load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"load_state_dict: {os.fspath(path)!r} holds a {type(obj).__name__}, not a state_dict.")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(
                f"load_state_dict: {os.fspath(path)!r} is not a flat state_dict: entry {key!r} "
                f"holds a {type(value).__name__}, not a tensor."
            )
        out[key] = value
    return out
