"""Histopathologic Cancer Detection (2019): 96x96 .tif tiles of lymph node sections, metastasis or not.

Kaggle's bundle holds `train_labels.csv` (`id,label`), 220,025 loose `train/<id>.tif`, 57,458
`test/<id>.tif` and `sample_submission.csv` (`id,label`): no inner zips, so the kit downloads the one
bundle (a request per tile would take days) and reads the tiles where they were extracted, never
copying or linking them one by one. The submission is P(label = 1), scored by ROC AUC.
"""

from kit.kaggle import Competition

COMPETITION = Competition(
    slug="histopathologic-cancer-detection",
    title="Histopathologic Cancer Detection",
    classes=("0", "1"),
    files=("train_labels.csv", "sample_submission.csv", "train", "test"),
    train_zip="train",  # a folder of the bundle
    test_zip="test",
    labels_csv="train_labels.csv",
    id_column="id",
    label_column="label",
    suffix=".tif",
    sample_submission="sample_submission.csv",
    submission_columns=("id", "label"),
    submission_kind="probability",
    positive_class="1",
    metric="roc_auc",
    bundle=True,
    description="220,025 96x96 .tif tiles, train_labels.csv; submit P(metastasis); ROC AUC",
)
