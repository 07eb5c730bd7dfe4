"""Thin Keras callbacks over the pure functions in ``kit.training.schedules``."""

from kit.training.callbacks.checkpoint import EpochCheckpoint
from kit.training.callbacks.divergence import DivergedError, DivergenceGuard
from kit.training.callbacks.lr_range_test import LRRangeTest, epochs_needed
from kit.training.callbacks.one_cycle import OneCycle
from kit.training.callbacks.progress import EpochTable
from kit.training.callbacks.sgdr import SGDR, save_weights_atomically

__all__ = [
    "DivergedError",
    "DivergenceGuard",
    "EpochCheckpoint",
    "LRRangeTest",
    "epochs_needed",
    "OneCycle",
    "EpochTable",
    "SGDR",
    "save_weights_atomically",
]
