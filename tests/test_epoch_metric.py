"""The competition's metric while training: the epoch table's column, the learner's history rows and
report.html's figure."""

import json

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit import metrics
from kit.analysis.interpretation import Interpretation
from kit.analysis.report import write_report
from kit.data import ImageClassifierData, tfms_from_model
from kit.training.callbacks.progress import HEADER, EpochTable, epoch_row, format_row, header
from kit.training.learner import ConvLearner

SZ = 32
# The report's two classes: P(dog) of 5 cats then 5 dogs. Of the 25 (dog, cat) pairs the dog ranks
# higher in 18 and ties in one (0.25): AUC = 18.5 / 25.
P_DOG = np.array([0.125, 0.25, 0.125, 0.875, 0.625, 0.9375, 0.5625, 0.25, 0.4375, 0.96875])
Y2 = np.array([0] * 5 + [1] * 5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("catsdogs"), n_train=16, n_valid=8)


def _data(folder):
    return ImageClassifierData.from_paths(folder, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False)


def test_table_header_and_rows_with_a_metric():
    assert HEADER == header() == "epoch   trn_loss   val_loss   accuracy"  # callers without a metric
    assert header("roc_auc") == "epoch   trn_loss   val_loss   accuracy    roc_auc"
    assert header("accuracy") == header("log_loss") == HEADER  # the lesson's columns show them already
    assert format_row(2, 0.5, 0.25, 0.75) == "    2    0.50000    0.25000    0.75000"
    assert format_row(2, 0.5, 0.25, 0.75, "roc_auc", 0.875) == "    2    0.50000    0.25000    0.75000    0.87500"
    assert format_row(2, 0.5, None, None, "roc_auc", None).split()[-3:] == ["-", "-", "-"]
    # A long name widens its column; the row's cell follows it.
    assert len(header("quadratic_kappa")) == len(format_row(0, 1.0, 1.0, 1.0, "quadratic_kappa", 0.5))
    logs = {"loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.75, "val_roc_auc": 0.875}
    assert epoch_row(3, logs, "roc_auc") == {
        "epoch": 3,
        "trn_loss": 0.5,
        "val_loss": 0.25,
        "accuracy": 0.75,
        "roc_auc": 0.875,
    }
    assert epoch_row(3, {"loss": 0.5}, "roc_auc")["roc_auc"] is None
    assert "roc_auc" not in epoch_row(3, logs) and set(epoch_row(3, logs, "accuracy")) == set(epoch_row(3, logs))


@pytest.mark.backends
def test_fit_shows_and_records_roc_auc(folder, capsys):
    keras.utils.set_random_seed(0)
    learn = ConvLearner.pretrained(tiny, _data(folder), precompute=True, weights=None, metric="roc_auc")
    assert learn.metric == "roc_auc"
    learn.fit(0.02, 1)
    out = capsys.readouterr().out
    assert "epoch   trn_loss   val_loss   accuracy    roc_auc" in out
    row = learn.history[-1]
    expected = metrics.roc_auc(learn.data.val_y, np.exp(learn.predict()))
    assert row["roc_auc"] == pytest.approx(expected, abs=1e-6) and 0 <= expected <= 1
    assert f"{row['roc_auc']:9.5f}" in out.splitlines()[-1]  # the row printed under the column
    assert learn.state_dict()["history"][-1]["roc_auc"] == row["roc_auc"]


def test_a_bad_metric_name_is_refused(folder):
    with pytest.raises(
        ValueError, match=r"metric must be one of \['log_loss', 'accuracy', 'roc_auc'.*Received metric='auc'"
    ):
        ConvLearner.pretrained(tiny, _data(folder), weights=None, metric="auc")
    with pytest.raises(ValueError, match="EpochTable's metric must be one of .* Received metric='AUC'"):
        EpochTable(metric="AUC")


def test_the_metric_attribute_is_checked_when_set(folder):
    learn = ConvLearner.pretrained(tiny, _data(folder), weights=None)
    assert learn.metric is None
    learn.metric = "f1_micro"
    assert learn.metric == "f1_micro"
    with pytest.raises(ValueError, match="ConvLearner's metric must be one of .* Received metric='kappa'"):
        learn.metric = "kappa"
    assert learn.metric == "f1_micro"


@pytest.fixture(scope="module")
def interp(tmp_path_factory) -> Interpretation:
    root = make_folders(tmp_path_factory.mktemp("dogscats"), n_train=0, n_valid=5, size=24)
    files = sorted((root / "valid").glob("*/*.jpg"))
    return Interpretation(files, Y2, np.stack([1 - P_DOG, P_DOG], axis=1), ["cats", "dogs"])


def test_report_shows_the_metric(interp, tmp_path):
    history = [{"epoch": 0, "trn_loss": 0.5, "val_loss": 0.4, "accuracy": 0.6, "roc_auc": 0.71875}]
    report = write_report(interp, tmp_path / "run", history=history, metric="roc_auc", max_class_plots=0)
    text = report.read_text(encoding="utf-8")
    assert "<td>log loss</td>" in text and "<td>roc_auc</td><td>0.74</td>" in text
    assert "Competition metric: roc_auc." in text
    assert "<th>accuracy</th><th>roc_auc</th>" in text and "<td>0.71875</td>" in text  # the history's column
    saved = json.loads((report.parent / "metrics.json").read_text())
    assert saved["metric"] == "roc_auc" and saved["roc_auc"] == pytest.approx(0.74)


def test_report_metric_checked_before_writing(interp, tmp_path):
    with pytest.raises(ValueError, match="write_report's metric must be one of .* Received metric='auc'"):
        write_report(interp, tmp_path / "run", metric="auc")
    three = Interpretation(interp.files[:3], np.array([0, 1, 2]), np.full((3, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="roc_auc is for two classes"):
        write_report(three, tmp_path / "run", metric="roc_auc")
    assert not (tmp_path / "run").exists()
    # accuracy and log loss are shown already: no second row, the name still noted.
    text = write_report(interp, tmp_path / "run", metric="accuracy", max_class_plots=0).read_text(encoding="utf-8")
    assert text.count("<td>accuracy</td>") == 1 and "Competition metric: accuracy." in text
