"""Dog Breed Identification (2017), fast.ai 2018's lesson 2: 120 breeds, labels in a CSV.

Kaggle's bundle holds `labels.csv` (`id,breed`, 10,222 rows), `train/<id>.jpg`, `test/<id>.jpg` (10,357)
and `sample_submission.csv`: `id` and one probability column per breed, in alphabetical order. Scored by
multi-class log loss. The classes are the CSV's breeds (sorted, which is the sample's order too).
"""

from kit.kaggle import Competition

COMPETITION = Competition(
    slug="dog-breed-identification",
    title="Dog Breed Identification",
    classes=(),  # the 120 breeds of labels.csv
    files=("labels.csv", "sample_submission.csv", "train.zip", "test.zip"),
    train_zip="train.zip",  # or an extracted train/ (a Kaggle notebook's input)
    test_zip="test.zip",
    labels_csv="labels.csv",
    id_column="id",
    label_column="breed",
    suffix=".jpg",
    sample_submission="sample_submission.csv",
    submission_columns=("id",),  # then one column per breed, in sample_submission.csv's order
    submission_kind="probabilities",
    metric="log_loss",
    # Each of 120 columns is clipped to [eps, 1 - eps] and the row renormalised, as Kaggle scores it:
    # 0.005 (the binary default) would put 0.6 of the mass on the 119 wrong breeds; 1e-4 puts 0.012
    # there and still caps a confident mistake at log(1e4) = 9.2.
    eps=1e-4,
    bundle=True,
    description="120 breeds, labels.csv; one probability per breed; multi-class log loss (lesson 2)",
)
