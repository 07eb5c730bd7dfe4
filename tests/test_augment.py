"""kit.data.augment: the fused augmentation stays a photograph, is random per image, idle at inference,
and lets Keras compile the learner's model with XLA."""

import math

import keras
import numpy as np
import pytest
from keras.src.trainers.trainer import model_supports_jit
from PIL import Image

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on
from kit.data.augment import N_PARAMS, Augment, lighting
from kit.training.device import default_jit_compile
from kit.training.learner import ConvLearner

pytestmark = pytest.mark.backends
S = 48
INNER = slice(12, 36)  # away from the borders, where PIL fills black and the layer reflects


def smooth_image() -> np.ndarray:
    """A smooth, asymmetric float32 RGB image in [0, 255]: bilinear sampling of it is well defined."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return np.stack(
        [127 + 100 * np.sin(xx / 7) * np.cos(yy / 9), 127 + 80 * np.cos((xx + 2 * yy) / 11), 60 + 2 * xx + yy], -1
    )


def pil_each_channel(img: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(img[..., k], mode="F"))) for k in range(img.shape[-1])], -1)


def forced(aug: Augment, images: np.ndarray, **cols) -> np.ndarray:
    """The layer's output for uniform draws fixed per column (default 0.5: the middle, no change)."""
    u = np.full((len(images), N_PARAMS), 0.5, dtype=np.float32)
    for col, value in cols.items():
        u[:, int(col[1:])] = value
    out = aug.apply(keras.ops.convert_to_tensor(images), aug.params(keras.ops.convert_to_tensor(u), images.shape[1]))
    return keras.ops.convert_to_numpy(out)


def test_rotation_matches_pil():
    img = smooth_image()
    aug = Augment(max_rotate=10)
    # Column 0 at 1.0 draws the largest angle: +10 degrees, counter-clockwise as PIL's rotate.
    out = forced(aug, img[None], c0=1.0)[0]
    ref = pil_each_channel(img, lambda im: im.rotate(10, resample=Image.BILINEAR))
    np.testing.assert_allclose(out[INNER, INNER], ref[INNER, INNER], atol=0.01)
    out = forced(aug, img[None], c0=0.0)[0]
    ref = pil_each_channel(img, lambda im: im.rotate(-10, resample=Image.BILINEAR))
    np.testing.assert_allclose(out[INNER, INNER], ref[INNER, INNER], atol=0.01)


def test_zoom_matches_a_pil_crop_and_resize():
    img = smooth_image()
    aug = Augment(max_zoom=1.25)
    # The largest zoom, window centred: PIL's resize of the central S/1.25 box back to S (bilinear).
    out = forced(aug, img[None], c1=1.0)[0]
    w = S / 1.25
    lo = (S - w) / 2
    ref = pil_each_channel(img, lambda im: im.resize((S, S), Image.BILINEAR, box=(lo, lo, lo + w, lo + w)))
    np.testing.assert_allclose(out, ref, atol=0.01)
    # Shifted as far as it goes: the window touches the top-left corner.
    out = forced(aug, img[None], c1=1.0, c2=0.0, c3=0.0)[0]
    ref = pil_each_channel(img, lambda im: im.resize((S, S), Image.BILINEAR, box=(0, 0, w, w)))
    np.testing.assert_allclose(out, ref, atol=0.01)


def test_flips_and_dihedral_are_exact():
    img = smooth_image()
    np.testing.assert_array_equal(forced(Augment(flip="horizontal"), img[None], c4=0.0)[0], img[:, ::-1])
    np.testing.assert_array_equal(forced(Augment(flip="horizontal"), img[None], c4=0.9)[0], img)
    dihedral = Augment(flip="dihedral")
    np.testing.assert_array_equal(forced(dihedral, img[None], c4=0.9, c5=0.0, c6=0.9)[0], img[::-1])
    np.testing.assert_array_equal(forced(dihedral, img[None], c4=0.9, c5=0.9, c6=0.0)[0], img.transpose(1, 0, 2))


def test_lighting_is_fastai_formula_and_uint8_round_trips():
    img = smooth_image()
    aug = Augment(brightness=0.1, contrast=0.2)
    out = forced(aug, img[None], c7=1.0, c8=0.0)[0]  # brightness +0.1, contrast 0.8
    mu = img.mean()
    np.testing.assert_allclose(out, np.clip((img - mu) * 0.8 + mu + 25.5, 0, 255), atol=1e-3)
    u8 = np.clip(img, 0, 255).astype(np.uint8)[None]
    out8 = forced(aug, u8, c7=1.0, c8=0.0)
    assert out8.dtype == np.uint8
    ref = keras.ops.convert_to_numpy(
        lighting(u8.astype(np.float32), np.array([0.1], np.float32), np.array([0.8], np.float32))
    )
    np.testing.assert_array_equal(out8, np.clip(np.round(ref), 0, 255).astype(np.uint8))


def test_identity_at_inference_random_per_image_in_training_and_tta():
    img = np.clip(smooth_image(), 0, 255).astype(np.uint8)
    batch = np.repeat(img[None], 16, axis=0)
    aug = Augment(flip="horizontal", max_rotate=10, max_zoom=1.1, brightness=0.05, contrast=0.05, seed=3)
    idle = keras.ops.convert_to_numpy(aug(batch, training=False))
    assert idle.dtype == np.uint8
    np.testing.assert_array_equal(idle, batch)
    out = keras.ops.convert_to_numpy(aug(batch, training=True))
    assert out.dtype == np.uint8 and out.shape == batch.shape
    flat = out.reshape(16, -1).astype(np.float32)
    assert len({row.tobytes() for row in out}) == 16  # every image its own transform
    assert np.abs(flat - flat.mean(0)).mean() > 1
    # Still a photograph of the same thing: close to the input or to its mirror in the middle.
    err = [
        min(
            np.abs(o[INNER, INNER].astype(float) - img[INNER, INNER]).mean(),
            np.abs(o[INNER, INNER].astype(float) - img[:, ::-1][INNER, INNER]).mean(),
        )
        for o in out
    ]
    assert max(err) < 25, err
    with aug.at_inference():
        tta = keras.ops.convert_to_numpy(aug(batch, training=False))
    assert len({row.tobytes() for row in tta}) == 16
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(aug(batch)), batch)  # off again afterwards


def test_flip_only_mirrors():
    img = np.clip(smooth_image(), 0, 255).astype(np.uint8)
    out = keras.ops.convert_to_numpy(
        Augment(flip="horizontal", seed=0)(np.repeat(img[None], 16, axis=0), training=True)
    )
    mirrored = [np.array_equal(o, img[:, ::-1]) for o in out]
    assert all(m or np.array_equal(o, img) for m, o in zip(mirrored, out))
    assert 0 < sum(mirrored) < 16


def test_transforms_fuse_into_one_layer():
    trn, val = tfms_from_model("resnet50", 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    aug = trn.augmentation()
    assert isinstance(aug, Augment) and val.augmentation() is None
    assert (aug.flip, aug.max_rotate, aug.max_zoom, aug.brightness, aug.contrast) == ("horizontal", 10, 1.1, 0.05, 0.05)
    assert aug.supports_jit
    with pytest.raises(ValueError, match="flip must be one of.*Received flip='diagonal'"):
        Augment(flip="diagonal")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("aug"), classes=("cats", "dogs"), n_train=10, n_valid=5, n_test=3)


def test_learner_with_lesson_augmentation_compiles_with_xla(folder):
    data = ImageClassifierData.from_paths(
        folder, tfms=tfms_from_model(tiny, 32, aug_tfms=transforms_side_on, max_zoom=1.1), bs=8, progress=False
    )
    keras.utils.set_random_seed(0)
    learn = ConvLearner.pretrained(tiny, data, precompute=False, weights=None)
    backend = keras.backend.backend()
    # The cause of the slow GPU path: a layer without XLA support turns XLA off for the whole model.
    assert model_supports_jit(learn.model)
    # JAX jits by default; TensorFlow does on a GPU (on this CPU the test asks for it, as a GPU would);
    # torch stays eager: torch.compile is opt-in.
    assert learn.jit_compile is None and default_jit_compile() is (backend == "jax")
    if backend == "tensorflow":
        learn.jit_compile = True
    learn.unfreeze()
    learn.fit(0.01, 1, verbose=False)
    assert learn.model.jit_compile is (backend in ("jax", "tensorflow"))
    assert math.isfinite(learn.history[-1]["val_loss"])


@pytest.mark.backends
def test_a_learners_model_saved_as_keras_loads_in_a_fresh_process(tmp_path):
    """`learn.model.save("x.keras")` loads back (the augmentation layer is registered as serializable)."""
    import subprocess
    import sys

    from kit.training.learner import ConvLearner

    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    data = ImageClassifierData.from_paths(
        folder,
        tfms=tfms_from_model(tiny, 32, aug_tfms=transforms_side_on, max_zoom=1.1),
        bs=8,
        progress=False,
        num_workers=1,
    )
    learn = ConvLearner.pretrained(tiny, data, weights=None)
    learn.model.save(tmp_path / "m.keras")
    x = np.asarray(data.split("valid").images[:4])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", learn.predict_array(x))
    code = (
        "import numpy as np, keras, kit.data.augment, kit.models.archs\n"
        f"m = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
        f"print(float(np.abs(np.asarray(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)) - np.load({str(tmp_path / 'y.npy')!r})).max()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-5
