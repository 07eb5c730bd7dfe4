"""A tiny convolutional body with the keras.applications constructor signature, for CPU tests."""

import keras

from kit.models.archs import Arch


def tiny_cnn(include_top: bool = False, weights=None, input_shape=(32, 32, 3), **kwargs) -> keras.Model:
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="early_conv")(inp)
    x = keras.layers.BatchNormalization(name="early_bn")(x)
    x = keras.layers.ReLU(name="early_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="late_conv")(x)
    x = keras.layers.BatchNormalization(name="late_bn")(x)
    x = keras.layers.ReLU(name="late_relu")(x)
    return keras.Model(inp, x, name="tiny_cnn")


tiny = Arch("tiny", tiny_cnn, preprocess="tf", split_at="late")
