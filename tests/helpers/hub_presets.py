"""A tiny Keras Hub ResNet preset with random weights, laid out as Kaggle mounts an attached Kaggle Model."""

from __future__ import annotations

from pathlib import Path

# Kaggle mounts the Kaggle Model keras/resnetv1, variation resnet_50_imagenet, version 3 here
# (below /kaggle/input); kagglehub's cache uses the same <model>/keras/<variation>/<version> below models/keras/.
ATTACHED = Path("resnetv1") / "keras" / "resnet_50_imagenet" / "3"
# ImageNet's mean and std, as Keras Hub's ResNet presets give them to their image converter.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALE = tuple(1 / (255 * s) for s in STD)
OFFSET = tuple(-m / s for m, s in zip(MEAN, STD))


def save_tiny_resnet_preset(folder: Path, seed: int = 0) -> Path:
    """Saves a two-stack ResNet backbone (random weights, `seed`) and its image converter as a preset folder."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    # ResNetBackbone wants 64 filters in its stem and first stack; two one-block stacks keep it at 0.1 M weights.
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
    )
    backbone.save_to_preset(str(folder))
    converter = keras_hub.layers.ResNetImageConverter(image_size=(224, 224), scale=list(SCALE), offset=list(OFFSET))
    converter.save_to_preset(str(folder))
    return Path(folder)


def attach_preset(kaggle_input: Path, seed: int = 0) -> Path:
    """A tiny resnet_50_imagenet preset attached under the fake Kaggle input root `kaggle_input`."""
    return save_tiny_resnet_preset(Path(kaggle_input) / ATTACHED, seed=seed)


def save_tiny_vit_preset(folder: Path, image_size: int = 32) -> Path:
    """A one-block ViT (4×4 patches of 8 px at 32 px, random weights) and its converter as a preset folder."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    backbone.save_to_preset(str(folder))
    keras_hub.layers.ViTImageConverter(
        image_size=(image_size, image_size), scale=1 / 127.5, offset=-1.0
    ).save_to_preset(str(folder))
    return Path(folder)
