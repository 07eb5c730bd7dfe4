"""Aerial Cactus Identification (2019): 32x32 aerial photos, is there a columnar cactus?

Kaggle's bundle holds `train.csv` (`id,has_cactus`; the ids are file names with `.jpg`), `train.zip`
(`train/<id>`, 17,500 images), `test.zip` (`test/<id>`, 4,000) and `sample_submission.csv`
(`id,has_cactus`). The submission is P(has_cactus = 1), scored by ROC AUC.
"""

from kit.kaggle import Competition, id_from_name

COMPETITION = Competition(
    slug="aerial-cactus-identification",
    title="Aerial Cactus Identification",
    classes=("0", "1"),
    files=("train.csv", "sample_submission.csv", "train.zip", "test.zip"),
    train_zip="train.zip",
    test_zip="test.zip",
    labels_csv="train.csv",
    id_column="id",
    label_column="has_cactus",
    suffix="",  # the ids are the file names
    test_id=id_from_name,  # so are the submission's
    sample_submission="sample_submission.csv",
    submission_columns=("id", "has_cactus"),
    submission_kind="probability",
    positive_class="1",
    metric="roc_auc",
    bundle=True,
    description="32x32 aerial photos, train.csv; submit P(cactus); ROC AUC",
)
