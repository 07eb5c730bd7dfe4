"""Keras Hub presets as the body (`hub:resnet_50_imagenet`): found attached with the network off, the lesson on
them, `kit train` / `kit predict`, and `import kit` without Keras Hub installed."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers.hub_presets import ATTACHED, OFFSET, SCALE, attach_preset, save_tiny_resnet_preset, save_tiny_vit_preset
from helpers.images import make_folders
from kit.models.archs import Preprocess, arch_label, get_arch
from kit.models.weights import PresetNotFoundError, find_preset_under, resolve_preset

ROOT = Path(__file__).resolve().parents[1]
SZ = 32


def _fake_preset(folder: Path) -> Path:
    """The files that make a folder a preset (empty: only the search reads them)."""
    folder.mkdir(parents=True)
    for name in ("config.json", "metadata.json", "model.weights.h5"):
        (folder / name).write_text("{}")
    return folder


def test_preset_chain_attached_then_cache_then_error(tmp_path):
    """Attached (newest version) → kagglehub's cache → download → one error naming the Kaggle Model to attach."""
    kaggle, cache = tmp_path / "input", tmp_path / "kagglehub" / "models"
    old = _fake_preset(kaggle / "resnetv1" / "keras" / "resnet_50_imagenet" / "2")
    new = _fake_preset(kaggle / "resnetv1" / "keras" / "resnet_50_imagenet" / "3")
    _fake_preset(kaggle / "resnetv1" / "keras" / "resnet_18_imagenet" / "9")  # another variation
    (kaggle / "resnetv1" / "keras" / "resnet_50_imagenet" / "10").mkdir()  # a version without files
    cached = _fake_preset(cache / "keras" / "resnetv1" / "keras" / "resnet_50_imagenet" / "3")
    kw = dict(kaggle_input=kaggle, caches=[cache])
    assert resolve_preset("resnet_50_imagenet", "keras/resnetv1", **kw) == new
    assert find_preset_under(kaggle, "resnet_101_imagenet") is None
    owned = _fake_preset(kaggle / "models" / "keras" / "resnetv1" / "keras" / "resnet_101_imagenet" / "1")
    assert find_preset_under(kaggle, "resnet_101_imagenet") == owned  # mounted below models/<owner>/
    for p in (new, old):
        (p / "model.weights.h5").unlink()  # config without weights: not a preset
    assert resolve_preset("resnet_50_imagenet", "keras/resnetv1", **kw) == cached
    (cached / "metadata.json").unlink()
    downloaded = _fake_preset(tmp_path / "downloaded")
    assert resolve_preset("resnet_50_imagenet", "keras/resnetv1", download=lambda: downloaded, **kw) == downloaded

    def offline():
        raise ConnectionError("no network")

    with pytest.raises(PresetNotFoundError) as e:
        resolve_preset("resnet_50_imagenet", "keras/resnetv1", download=offline, **kw)
    msg = str(e.value)
    assert "'keras/resnetv1'" in msg and "variation 'resnet_50_imagenet'" in msg
    assert str(kaggle) in msg and str(cache) in msg and "ConnectionError: no network" in msg
    assert f"{kaggle}/resnetv1/keras/resnet_50_imagenet/<version>/" in msg  # where Kaggle mounts it
    assert isinstance(e.value, FileNotFoundError)


def test_affine_preprocess_and_its_config():
    layer = Preprocess("affine", scale=SCALE, offset=OFFSET)
    x = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    got = keras.ops.convert_to_numpy(layer(x))[0, 0, 0]
    np.testing.assert_allclose(
        got, [0 * SCALE[0] + OFFSET[0], 128 * SCALE[1] + OFFSET[1], 255 * SCALE[2] + OFFSET[2]], rtol=1e-5
    )
    again = Preprocess.from_config(layer.get_config())
    assert again.scale == layer.scale and again.offset == layer.offset
    assert Preprocess("affine", scale=1 / 255).scale == (1 / 255,) * 3 and Preprocess("affine").offset == (0.0,) * 3
    with pytest.raises(ValueError, match='scale and offset with mode "affine" only'):
        Preprocess("tf", scale=SCALE)
    with pytest.raises(ValueError, match="1 or 3 values"):
        Preprocess("affine", scale=(1.0, 2.0), offset=0)


def test_spec_parsing():
    from kit.models.hub import arch_name, parse_spec

    assert parse_spec("hub:resnet_50_imagenet").preset == "resnet_50_imagenet"
    spec = parse_spec("hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3")
    assert (spec.preset, spec.model, spec.handle) == (
        "resnet_50_imagenet",
        "keras/resnetv1",
        "keras/resnetv1/keras/resnet_50_imagenet/3",
    )
    folder = parse_spec("hub:/kaggle/input/resnetv1/keras/resnet_50_imagenet/3")
    assert folder.preset == "resnet_50_imagenet" and folder.folder == Path("/kaggle/input") / ATTACHED
    assert arch_name("ResNet-50.v2") == "hub_resnet_50_v2"
    # A run folder's or submission's name: slashes of a folder or handle never reach it.
    assert arch_label("hub:/kaggle/input/resnetv1/keras/resnet_50_imagenet/3") == "hub_resnet_50_imagenet"
    assert arch_label("hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3") == "hub_resnet_50_imagenet"
    assert arch_label("resnet50") == "resnet50" and arch_label("ConvNeXtTiny") == "ConvNeXtTiny"
    with pytest.raises(ValueError, match="kaggle://<owner>/<model>"):
        parse_spec("hub:kaggle://keras/resnetv1")
    with pytest.raises(ValueError, match="names no preset"):
        parse_spec("hub:")


def test_import_kit_and_other_archs_without_keras_hub():
    """With keras_hub unimportable: `import kit` and a keras.applications arch work; a hub: arch says how to install."""
    code = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "keras_hub" or name.startswith("keras_hub."):
            raise ImportError("No module named 'keras_hub' (blocked by the test)")
        return None

sys.meta_path.insert(0, Blocker())
import kit
from kit.models.archs import build_body, get_arch
body = build_body(get_arch("resnet50"), 32, weights=None)
assert body.output.shape[-1] == 2048
try:
    get_arch("hub:resnet_50_imagenet")
except ImportError as e:
    assert "pip install 'kit[hub]'" in str(e), e
    print("hint:", e)
else:
    raise SystemExit("a hub: arch built without keras_hub")
assert "keras_hub" not in sys.modules
print("ok")
"""
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-3000:]


# ------------------------------------------------------------------ with Keras Hub installed
needs_hub = pytest.mark.skipif(
    importlib.util.find_spec("keras_hub") is None, reason="Keras Hub is the optional extra kit[hub]"
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """A fake Kaggle notebook with internet off: the tiny preset attached as keras/resnetv1, resnet_50_imagenet."""
    import kit.models.hub as hub

    def no_network(handle):
        raise ConnectionError(f"internet is off (asked for {handle})")

    monkeypatch.setattr(hub, "download_preset", no_network)
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "kit-cache"))
    return attach_preset(tmp_path / "input")


@needs_hub
def test_hub_arch_reads_the_preset(offline, tmp_path, monkeypatch):
    arch = get_arch("hub:resnet_50_imagenet")
    assert arch.name == "hub_resnet_50_imagenet" and arch.preprocess == "affine"
    np.testing.assert_allclose(arch.scale, SCALE)
    np.testing.assert_allclose(arch.offset, OFFSET)
    assert arch.split_at == "stack1_"  # the second of two stacks, as conv4 is the third of four
    assert arch.resolve() == offline / "model.weights.h5"
    by_path = get_arch(f"hub:{offline}")
    assert by_path.name == arch.name and by_path.resolve() == arch.resolve()
    assert get_arch("hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3").resolve() == arch.resolve()

    # Detached, offline: one error naming Keras Hub's own Kaggle Model for the preset.
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "nothing"))
    with pytest.raises(PresetNotFoundError) as e:
        get_arch("hub:resnet_50_imagenet")
    msg = str(e.value)
    assert "Kaggle Model 'keras/resnetv1', variation 'resnet_50_imagenet'" in msg and "internet is off" in msg
    assert str(tmp_path / "nothing") in msg and str(tmp_path / "kagglehub") in msg
    # Downloaded once by kagglehub (its cache: $KAGGLEHUB_CACHE/models/<owner>/<model>/keras/<preset>/<version>/).
    cached = shutil.copytree(offline, tmp_path / "kagglehub" / "models" / "keras" / ATTACHED)
    assert get_arch("hub:resnet_50_imagenet").resolve() == cached / "model.weights.h5"
    with pytest.raises(PresetNotFoundError, match="none of Keras Hub's own presets"):
        get_arch("hub:no_such_preset")
    with pytest.raises(FileNotFoundError, match="not a Keras Hub preset folder"):
        get_arch(f"hub:{tmp_path}")


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


@needs_hub
@pytest.mark.backends
def test_lesson_on_a_hub_preset(offline, tmp_path):
    """precompute → fit → unfreeze with differential rates (BatchNorm frozen) → predict → save / load."""
    from kit.data import ImageClassifierData
    from kit.data.transforms import tfms_from_model
    from kit.training.learner import ConvLearner

    root = make_folders(tmp_path / "photos", n_train=8, n_valid=4)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model("resnet50", SZ), bs=4, progress=False)
    learn = ConvLearner.pretrained("hub:resnet_50_imagenet", data, precompute=True)
    import keras_hub

    # The preset's weights are the body's, and its converter the body's first layer.
    preset = keras_hub.models.Backbone.from_preset(str(offline))
    for a, b in zip(_weights(preset), _weights(learn.backbone), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(learn.body.layers[1], Preprocess) and learn.body.layers[1].mode == "affine"
    early, late, head = learn.layer_groups
    assert late[0].name.startswith("stack1_") and not any(l.name.startswith("stack1_") for l in early)
    assert learn.activation_path("train").name.startswith("act_hub_resnet_50_imagenet_")
    assert learn.activation_path("train").is_file()
    learn.fit(1e-2, 1, verbose=False)

    learn.unfreeze()
    bns = [l for l in learn.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and not any(l.trainable for l in bns)
    assert all(l.trainable for l in early + late if not isinstance(l, keras.layers.BatchNormalization))
    stats = [keras.ops.convert_to_numpy(v) for l in bns for v in l.non_trainable_weights]
    conv = next(l for l in early if isinstance(l, keras.layers.Conv2D))
    before = keras.ops.convert_to_numpy(conv.kernel)
    learn.fit(np.array([1e-4, 1e-3, 1e-2]), 1, cycle_len=1, verbose=False)
    assert not np.array_equal(before, keras.ops.convert_to_numpy(conv.kernel))  # the early body trained
    after = [keras.ops.convert_to_numpy(v) for l in bns for v in l.non_trainable_weights]
    for a, b in zip(stats, after, strict=True):
        np.testing.assert_array_equal(a, b)  # its BatchNorm statistics did not move

    log_preds = learn.predict()
    assert log_preds.shape == (8, 2) and np.allclose(np.exp(log_preds).sum(1), 1, atol=1e-4)
    learn.save("hub")
    again = ConvLearner.pretrained("hub:resnet_50_imagenet", data, weights=None)
    again.load("hub")
    np.testing.assert_allclose(again.predict(), log_preds, atol=1e-5)


@needs_hub
def test_a_vit_preset_pools_its_tokens(offline, tmp_path):
    """A transformer's tokens as the feature map: the lesson runs; another image size says which to use."""
    from kit.data import ImageClassifierData
    from kit.data.transforms import tfms_from_model
    from kit.training.learner import ConvLearner

    folder = save_tiny_vit_preset(tmp_path / "vit" / "vit_tiny" / "1")
    root = make_folders(tmp_path / "photos", n_train=4, n_valid=2)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model("resnet50", SZ), bs=4, progress=False)
    learn = ConvLearner.pretrained(f"hub:{folder}", data, precompute=True)
    assert learn.arch.name == "hub_vit_tiny" and learn.body.output.shape[1:] == (17, 1, 16)  # 16 patches + class
    assert learn.activations("train").shape == (8, 32)
    learn.fit(1e-2, 1, verbose=False)
    learn.unfreeze()
    learn.fit(np.array([1e-4, 1e-3, 1e-2]), 1, verbose=False)
    assert np.isfinite(learn.predict()).all()
    bigger = ImageClassifierData.from_paths(root, tfms=tfms_from_model("resnet50", 48), bs=4, progress=False)
    with pytest.raises(ValueError, match="--size 32"):
        ConvLearner.pretrained(f"hub:{folder}", bigger)


@needs_hub
def test_activations_are_keyed_by_the_preset_weights(offline, tmp_path):
    """Two presets of one name and other weights: two activation caches, never one stale one."""
    from kit.data import ImageClassifierData
    from kit.data.transforms import tfms_from_model
    from kit.training.learner import ConvLearner

    other = save_tiny_resnet_preset(tmp_path / "mine" / "resnet_50_imagenet", seed=1)
    root = make_folders(tmp_path / "photos", n_train=2, n_valid=2)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model("resnet50", SZ), bs=4, progress=False)
    a = ConvLearner.pretrained("hub:resnet_50_imagenet", data).activation_path("train")
    b = ConvLearner.pretrained(f"hub:{other}", data).activation_path("train")
    assert a.name.startswith("act_hub_resnet_50_imagenet_") and b.name.startswith("act_hub_resnet_50_imagenet_")
    assert a != b


@needs_hub
@pytest.mark.backends
def test_kit_train_and_predict_offline(offline, tmp_path, capsys):
    """`kit train --arch hub:resnet_50_imagenet` with the model attached and no network, then `kit predict`."""
    from kit import env
    from kit.cli import main
    from kit.run import RunFolder

    root = make_folders(tmp_path / "photos", n_train=6, n_valid=3)
    config = tmp_path / "train.json"
    config.write_text(
        json.dumps({"tta": False, "lr": 0.01, "epochs": 1, "bs": 4, "head_min_steps": 0, "unfreeze_epochs": 1})
    )
    args = ["train", "--folder", str(root), "--arch", "hub:resnet_50_imagenet", "--size", str(SZ)]
    assert main([*args, "--config", str(config)]) == 0, capsys.readouterr().err
    run = RunFolder.latest(env.work_dir_for(root))
    assert run.finished and run.read_config()["arch"] == "hub:resnet_50_imagenet"
    capsys.readouterr()
    assert main(["predict", "--folder", str(root), str(root / "valid")]) == 0
    lines = capsys.readouterr().out.splitlines()
    preds = run.read_predictions()
    assert [line.split("\t")[0] for line in lines] == preds.val_files
    np.testing.assert_allclose([float(line.split("\t")[2]) for line in lines], preds.val_probs.max(1), atol=1e-3)
