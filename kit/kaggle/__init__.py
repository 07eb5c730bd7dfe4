"""The Kaggle side: competitions and their registry, the official client, the data's layout, submissions.

Plugins (`kit.plugins`, one file per competition) build a `Competition` from here:

    from kit.kaggle import Competition, label_by_prefix

Importing this package loads neither Keras nor the `kaggle` client; `kit.kaggle.client` imports the
client only when a download or an upload runs.
"""

from kit.kaggle.competition import (
    Competition,
    get_competition,
    id_from_name,
    id_from_stem,
    label_by_prefix,
    list_competitions,
)

__all__ = ["Competition", "get_competition", "id_from_name", "id_from_stem", "label_by_prefix", "list_competitions"]
