"""Dogs vs. Cats (2013), the competition of fast.ai's lesson 1.

train.zip holds 25,000 `cat.N.jpg` / `dog.N.jpg` under `train/`; test1.zip holds 12,500 `N.jpg`
under `test1/`. A submission is `id,label` with 1 = dog and 0 = cat, scored by accuracy (about 80%
was the state of the art when it ran; the lesson reaches about 99%).
"""

from kit.kaggle import Competition, label_by_prefix

COMPETITION = Competition(
    slug="dogs-vs-cats",
    title="Dogs vs. Cats (2013)",
    classes=("cats", "dogs"),  # class index 0 = cat, 1 = dog, as the submission requires
    files=("train.zip", "test1.zip", "sampleSubmission.csv"),
    train_zip="train.zip",
    test_zip="test1.zip",
    label_from_name=label_by_prefix({"cat": "cats", "dog": "dogs"}),
    submission_columns=("id", "label"),
    submission_kind="class_index",
    metric="accuracy",
    valid_size=2000,
    description="the lesson's 2013 competition; submit 1 = dog, 0 = cat; accuracy",
)
