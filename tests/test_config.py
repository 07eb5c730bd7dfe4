"""TrainConfig: defaults → file (JSON or TOML) → flags, and clear errors for bad values."""

import pytest

from kit.jobs.config import TrainConfig, load_config


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
        (dict(lr=-1.0), "lr must be a positive number or None"),
        (dict(aug="sideways"), "aug must be 'side_on', 'top_down' or 'none'. Received aug='sideways'"),
        (dict(opt="rmsprop"), "rmsprop"),
        (dict(unfreeze_lr=0), "unfreeze_lr"),
        (dict(lr_div=1), "lr_div must be > 1"),
        (dict(colour="red"), "Unknown config keys \\['colour'\\]. Valid keys: .*arch"),
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
