"""Shared fixtures: the fake Kaggle server (tests/helpers/fake_kaggle.py) for every test module."""

pytest_plugins = ["helpers.fake_kaggle"]
