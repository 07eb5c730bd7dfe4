"""Archs, the weights resolution order, preprocessing and the head."""

import keras
import numpy as np
import pytest

from kit.models.archs import (
    Arch,
    Preprocess,
    WeightsNotFoundError,
    build_head,
    get_arch,
    resnet50,
    resolve_weights,
)

# An arch whose "download" goes to a closed local port: offline, as in CI.
OFFLINE = Arch(
    "offline_net",
    keras.applications.ResNet50,
    "caffe",
    "offline_net_notop.h5",
    "http://127.0.0.1:9/offline_net_notop.h5",
)


@pytest.fixture
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    return tmp_path


def test_resolution_order(homes):
    cache = homes / "keras" / "models" / OFFLINE.weights_file
    kaggle = homes / "input" / "keras-weights" / "sub" / OFFLINE.weights_file
    explicit = homes / "mine.h5"
    for p in (cache, kaggle, explicit):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"w")
    assert resolve_weights(OFFLINE, explicit) == explicit
    assert resolve_weights(OFFLINE, "imagenet") == kaggle  # an attached Kaggle dataset first
    kaggle.unlink()
    assert resolve_weights(OFFLINE, "imagenet") == cache  # then the Keras cache
    cache.unlink()
    with pytest.raises(WeightsNotFoundError) as e:  # then download, which fails offline
        resolve_weights(OFFLINE, "imagenet")
    msg = str(e.value)
    assert "offline_net_notop.h5" in msg and str(homes / "keras" / "models") in msg and "download failed" in msg
    assert "weights=None" in msg and str(homes / "input") in msg
    assert resolve_weights(OFFLINE, None) is None and resolve_weights(OFFLINE, "none") is None
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.h5"):
        resolve_weights(OFFLINE, homes / "nope.h5")


def test_resnet50_names_the_keras_file(homes):
    with pytest.raises(WeightsNotFoundError, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        resolve_weights(resnet50, "imagenet", download=False)


def test_get_arch():
    assert get_arch("resnet50") is resnet50 and get_arch("ResNet50") is resnet50
    mobile = get_arch(keras.applications.MobileNetV2)
    assert mobile.preprocess == "tf"
    assert get_arch("DenseNet121").preprocess == "torch"
    assert get_arch("ConvNeXtTiny").preprocess == "none"
    with pytest.raises(ValueError, match="Unknown arch 'resnet34'. Known: .*resnet50"):
        get_arch("resnet34")


@pytest.mark.backends
def test_preprocess_modes():
    x = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    out = lambda mode: keras.ops.convert_to_numpy(Preprocess(mode)(x))[0, 0, 0]
    np.testing.assert_allclose(out("caffe"), [255 - 103.939, 128 - 116.779, 0 - 123.68], rtol=1e-5)
    np.testing.assert_allclose(out("tf"), [-1, 128 / 127.5 - 1, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        out("torch"), [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5
    )
    np.testing.assert_allclose(out("lite"), [-127 / 128, 1 / 128, 1], rtol=1e-5)
    np.testing.assert_allclose(out("none"), [0, 128, 255])
    with pytest.raises(ValueError, match="Received mode='bgr'"):
        Preprocess("bgr")


@pytest.mark.backends
def test_head_outputs_log_probabilities():
    head = build_head(6, 4, ps=0.1, xtra_fc=[8])
    out = keras.ops.convert_to_numpy(head(np.random.default_rng(0).normal(size=(3, 6)).astype("float32")))
    assert out.shape == (3, 4) and np.all(out <= 0)
    np.testing.assert_allclose(np.exp(out).sum(1), 1, rtol=1e-5)
    assert len(build_head(6, 2, xtra_fc=[]).layers) == 4
    with pytest.raises(ValueError, match="one dropout per Dense layer"):
        build_head(6, 2, ps=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="Dropout values must be in"):
        build_head(6, 2, ps=1.5)
