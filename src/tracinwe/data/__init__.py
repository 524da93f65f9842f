"""Datasets for tracinwe: bundled real corpora, table files and HuggingFace datasets.

``load_dataset_source("bundled:sms-spam")``, ``load_dataset_source("reviews.csv")``,
``load_dataset_source("path/to/saved_dataset")`` or a hub name all give a
validated :class:`TextDataset`.
"""

from .bundled import BUNDLED_DATASETS, BundledSpec, load_bundled
from .dataset import TextDataset
from .errors import DataError
from .files import load_hf_dataset, load_table
from .sources import load_dataset_source

__all__ = [
    "TextDataset",
    "load_dataset_source",
    "BUNDLED_DATASETS",
    "DataError",
    "BundledSpec",
    "load_bundled",
    "load_table",
    "load_hf_dataset",
]
