"""Indexers for the five FAS datasets, by command-line name."""
from .base import DatasetIndexer, IndexWarning, LayoutError, VideoRecord
from .casia import CasiaIndexer
from .msu import MsuIndexer
from .oulu import OuluIndexer
from .replay import ReplayIndexer
from .rose import RoseIndexer

INDEXERS = {cls.name: cls for cls in (CasiaIndexer, ReplayIndexer, MsuIndexer, OuluIndexer, RoseIndexer)}


def get_indexer(name: str) -> DatasetIndexer:
    """A fresh indexer for a dataset's command-line name (casia, replay, msu, oulu, rose)."""
    try:
        return INDEXERS[name]()
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(INDEXERS)}") from None


__all__ = ["INDEXERS", "DatasetIndexer", "IndexWarning", "LayoutError", "VideoRecord", "get_indexer"]
