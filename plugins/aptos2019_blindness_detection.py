"""APTOS 2019 Blindness Detection: retina photos graded 0 (no diabetic retinopathy) to 4 (proliferative).

A code competition: the notebook runs with internet off and must write `/kaggle/working/submission.csv`.
Its input holds `train.csv` (`id_code,diagnosis`), `train_images/<id_code>.png` (3,662),
`test_images/<id_code>.png`, `test.csv` and `sample_submission.csv` (`id_code,diagnosis`). The
submission is the grade, scored by quadratic weighted kappa (a miss by two grades costs four times a
miss by one).
"""

from kit.kaggle import Competition

COMPETITION = Competition(
    slug="aptos2019-blindness-detection",
    title="APTOS 2019 Blindness Detection",
    classes=("0", "1", "2", "3", "4"),
    files=("train.csv", "test.csv", "sample_submission.csv", "train_images", "test_images"),
    train_zip="train_images",
    test_zip="test_images",
    train_folder="train_images",
    test_folder="test_images",
    labels_csv="train.csv",
    id_column="id_code",
    label_column="diagnosis",
    suffix=".png",
    sample_submission="sample_submission.csv",
    submission_columns=("id_code", "diagnosis"),
    submission_kind="class_name",
    metric="quadratic_kappa",
    bundle=True,
    description="retina photos graded 0-4, train.csv; submit the grade; quadratic weighted kappa",
)
