"""Training methods: one class per method, each with ``update(batch)`` and ``predict(x)``."""
from .base import NonFiniteLoss
from .erm import ERM, ERMConfig
from .rfm import RFM, RFMConfig

METHODS = {"rfm": (RFM, RFMConfig), "erm": (ERM, ERMConfig)}

__all__ = ["METHODS", "ERM", "ERMConfig", "NonFiniteLoss", "RFM", "RFMConfig"]
