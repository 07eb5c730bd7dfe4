"""Thin Keras callbacks over the pure functions in ``kit.schedules``."""
from kit.callbacks.lr_range_test import LRRangeTest, epochs_needed
from kit.callbacks.one_cycle import OneCycle
from kit.callbacks.progress import EpochTable
from kit.callbacks.sgdr import SGDR, save_weights_atomically

__all__ = ["LRRangeTest", "epochs_needed", "OneCycle", "EpochTable", "SGDR", "save_weights_atomically"]
