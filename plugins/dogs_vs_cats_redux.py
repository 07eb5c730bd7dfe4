"""Dogs vs. Cats Redux: Kernels Edition (2016), the kit's default competition.

train.zip holds 25,000 `cat.N.jpg` / `dog.N.jpg` under `train/`; test.zip holds 12,500 `N.jpg` under
`test/`. A submission is `id,label` with label = P(dog), scored by log loss: probabilities are
clipped to [0.005, 0.995] so one confident mistake costs log(200) = 5.3 instead of infinity.
"""

from kit.kaggle import Competition, label_by_prefix

COMPETITION = Competition(
    slug="dogs-vs-cats-redux-kernels-edition",
    title="Dogs vs. Cats Redux: Kernels Edition",
    classes=("cats", "dogs"),
    files=("train.zip", "test.zip", "sample_submission.csv"),
    train_zip="train.zip",
    test_zip="test.zip",
    label_from_name=label_by_prefix({"cat": "cats", "dog": "dogs"}),
    submission_columns=("id", "label"),
    submission_kind="probability",
    positive_class="dogs",
    metric="log_loss",
    eps=0.005,
    valid_size=2000,
    description="25,000 labelled photos; submit P(dog); log loss (the default)",
)
