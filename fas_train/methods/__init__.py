"""Training methods: one class per method, each with ``update(batch)`` and ``predict(x)``."""
from .rfm import RFM, RFMConfig

__all__ = ["RFM", "RFMConfig"]
