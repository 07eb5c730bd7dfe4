"""Thin Keras callbacks over the pure functions in ``kit.schedules``."""
