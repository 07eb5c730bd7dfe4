"""Plant Seedlings Classification (2017): 12 species of seedlings photographed from above, as .png.

Kaggle's bundle holds `train.zip` (`train/<species>/<name>.png`, 4,750 images: the labels are the
folders), `test.zip` (`test/<name>.png`, 794) and `sample_submission.csv` (`file,species`): the file
name with its extension, and the species' name. Scored by micro-averaged F1.
"""

from kit.kaggle import Competition, id_from_name

COMPETITION = Competition(
    slug="plant-seedlings-classification",
    title="Plant Seedlings Classification",
    classes=(
        "Black-grass",
        "Charlock",
        "Cleavers",
        "Common Chickweed",
        "Common wheat",
        "Fat Hen",
        "Loose Silky-bent",
        "Maize",
        "Scentless Mayweed",
        "Shepherds Purse",
        "Small-flowered Cranesbill",
        "Sugar beet",
    ),
    files=("sample_submission.csv", "train.zip", "test.zip"),
    train_zip="train.zip",
    test_zip="test.zip",
    labels_from_folders=True,  # train/<species>/, read where it lies; valid is a seeded split of it
    test_id=id_from_name,  # "0021e90e4.png"
    sample_submission="sample_submission.csv",
    submission_columns=("file", "species"),
    submission_kind="class_name",
    metric="f1_micro",
    bundle=True,
    description="12 species in train/<species>/*.png; submit the species; micro-F1",
)
