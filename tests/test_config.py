"""TrainConfig: defaults → recipe → file (JSON or TOML) → flags, each with its [quick] table, and clear
errors for bad values; old runs' config.json still load."""

import json

import numpy as np
import pytest

from kit.jobs.config import TrainConfig, config_from_dict, load_config, recipe_file, recipe_names
from kit.jobs.train import stages


def test_layers_defaults_file_flags(tmp_path):
    assert load_config() == TrainConfig()
    f = tmp_path / "c.json"
    f.write_text('{"arch": "efficientnet_lite0", "size": 96, "opt": "adam"}')
    cfg = load_config(f, size=64, lr=None)
    assert (cfg.arch, cfg.size, cfg.opt, cfg.lr) == ("efficientnet_lite0", 64, "adam", None)
    t = tmp_path / "c.toml"
    t.write_text("unfreeze_epochs = 2\nunfreeze_lr = 0.001\n")
    cfg = load_config(t)
    assert cfg.unfreeze_epochs == 2 and cfg.unfreeze_lr == 0.001
    assert cfg.to_dict()["unfreeze_lr"] == 0.001


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(size=0), "size must be an integer >= 1. Received size=0"),
        (dict(epochs=1.5), "epochs must be an integer"),
        (dict(lr=-1.0), "lr must be a finite number > 0 or None. Received lr=-1.0"),
        (dict(aug="sideways"), "aug must be one of \\['side_on', 'top_down', 'none'\\]. Received aug='sideways'"),
        (dict(opt="rmsprop"), "rmsprop"),
        (dict(unfreeze_lr=0), "unfreeze_lr"),
        (dict(lr_div=1), "lr_div must be a finite number > 1"),
        (dict(colour="red"), "Unknown config keys \\['colour'\\]. Valid keys: .*arch"),
        (dict(unfreeze_opt="rmsprop"), "unfreeze_opt must be one of \\['sgd', 'adam', 'adamw'\\]"),
        (dict(unfreeze_lrs=[1e-5, 1e-4]), "unfreeze_lrs must be 3 rates \\[early body, late body, head\\]"),
        (dict(unfreeze_lrs=[0.0, 0.0, 0.0]), "not all 0. Received unfreeze_lrs=\\[0.0, 0.0, 0.0\\]"),
        (dict(unfreeze_lrs=[1e-5, -1.0, 1e-3]), "unfreeze_lrs\\[1\\] must be a finite number >= 0"),
        (dict(unfreeze_lrs=[1e-5, "a", 1e-3]), "unfreeze_lrs must be a list of numbers or null"),
        (dict(unfreeze_lrs=[1e-5, 1e-4, 1e-3], unfreeze_lr=1e-3), "unfreeze_lr and unfreeze_lrs both"),
        (dict(unfreeze_cycle_mult=0), "unfreeze_cycle_mult must be an integer >= 1. Received unfreeze_cycle_mult=0"),
        (dict(unfreeze_cycle_len=-1), "unfreeze_cycle_len must be an integer >= 0"),
        (dict(cycle_len=-1), "cycle_len must be an integer >= 0 or None"),
        (dict(max_per_class=0), "max_per_class must be an integer >= 1 or None. Received max_per_class=0"),
        (dict(train_bn="yes"), "train_bn must be true or false. Received train_bn='yes'"),
        (dict(stochastic_depth=1), "stochastic_depth must be true or false"),
    ],
)
def test_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, **kw)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Config file not found: .*missing.json"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{arch: ")
    with pytest.raises(ValueError, match="Cannot parse config file .*bad.json"):
        load_config(bad)


def test_defaults_keep_the_lesson_stages():
    """The new fields' defaults are what `kit train` always did: one optimizer, BatchNorm frozen,
    stochastic depth on, [lr/100, lr/10, lr] in SGDR cycles of 1, 2, 4... once unfrozen."""
    head, unfreeze = stages(load_config(None, unfreeze_epochs=3), 0.01)
    assert (head.name, head.opt, head.cycle_len, head.n_cycle) == ("head", "sgd", 1, 3)
    assert (unfreeze.opt, unfreeze.train_bn, unfreeze.stochastic_depth) == ("sgd", False, True)
    assert (unfreeze.cycle_len, unfreeze.cycle_mult, unfreeze.epochs) == (1, 2, 7)
    np.testing.assert_allclose(unfreeze.lrs, [1e-4, 1e-3, 1e-2])


def test_old_config_json_without_the_new_fields_still_loads():
    """A run saved before the stage fields existed resumes with the defaults, i.e. as it trained."""
    new = {"unfreeze_opt", "unfreeze_lrs", "unfreeze_cycle_len", "unfreeze_cycle_mult", "train_bn"}
    new |= {"stochastic_depth", "max_per_class"}
    old = {k: v for k, v in TrainConfig(unfreeze_epochs=2, opt="adam").to_dict().items() if k not in new}
    cfg = config_from_dict(json.loads(json.dumps({**old, "resolved": {"devices": ["cpu:0"]}})))
    assert cfg == TrainConfig(unfreeze_epochs=2, opt="adam")


def test_recipes_are_shipped_files_of_config_fields():
    assert {"real", "demo"} <= set(recipe_names())
    assert recipe_file("real").name == "real.toml" and recipe_file("real").parent.name == "recipes"
    real = load_config(recipe="real")
    assert (real.arch, real.size, real.lr, real.epochs, real.opt) == ("efficientnet_lite0", 288, 1e-2, 3, "sgd")
    assert (real.unfreeze_opt, real.unfreeze_lrs, real.train_bn, real.stochastic_depth) == (
        "adam",
        [1e-5, 5e-5, 2e-4],
        True,
        False,
    )
    head, unfreeze = stages(real, real.lr)
    assert head.cycle_len is None and head.epochs == 3  # cycle_len = 0: the lesson's constant-rate fit(1e-2, 3)
    assert (unfreeze.opt, unfreeze.n_cycle, unfreeze.cycle_len, unfreeze.cycle_mult) == ("adam", 2, 1, 1)
    np.testing.assert_array_equal(unfreeze.lrs, [1e-5, 5e-5, 2e-4])
    quick = load_config(recipe="real", quick=True)
    assert (quick.max_per_class, quick.size, quick.bs, quick.epochs, quick.unfreeze_epochs, quick.n_aug) == (
        20,
        64,
        16,
        1,
        1,
        1,
    )
    assert quick.unfreeze_opt == "adam"  # the slice keeps the rest of the recipe
    demo = load_config(recipe="demo")
    assert (demo.competition, demo.arch, demo.weights) == ("digits", "efficientnet_lite0", "imagenet")  # offline
    assert load_config(recipe="demo", quick=True).sample


def test_recipe_then_file_then_flags(tmp_path):
    """Each layer overrides the one before; --quick lays each file's [quick] table over that file."""
    f = tmp_path / "mine.toml"
    f.write_text('size = 256\nseed = 1\nunfreeze_opt = "adamw"\n\n[quick]\nsize = 48\nbs = 8\n')
    cfg = load_config(f, recipe="real", seed=7)
    assert (cfg.size, cfg.seed, cfg.unfreeze_opt, cfg.arch) == (256, 7, "adamw", "efficientnet_lite0")
    cfg = load_config(f, recipe="real", quick=True, bs=4)
    # recipe 288 → its [quick] 64 → mine 256 → my [quick] 48; bs: the recipe's quick 16 → mine 8 → the flag 4.
    assert (cfg.size, cfg.bs, cfg.max_per_class, cfg.seed) == (48, 4, 20, 1)
    plain = tmp_path / "plain.json"
    plain.write_text('{"epochs": 2}')
    assert load_config(plain, recipe="real", quick=True).epochs == 2  # a file without [quick] still overrides
    with pytest.raises(ValueError, match="quick needs a \\[quick\\] table .*none of .*plain.json has one"):
        load_config(plain, quick=True)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown recipe 'rael'. Known recipes: \\['demo', 'real'"):
        load_config(recipe="rael")


def test_bad_quick_table(tmp_path):
    f = tmp_path / "q.json"
    f.write_text('{"quick": 3}')
    with pytest.raises(ValueError, match="q.json: 'quick' must be a table of TrainConfig fields .*Received quick=3"):
        load_config(f)
    f.write_text('{"quick": {"colour": 1}}')
    with pytest.raises(ValueError, match="Unknown config keys \\['colour'\\]"):
        load_config(f, quick=True)
