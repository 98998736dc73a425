"""Training methods: one class per method, each with ``update(batch)`` and ``predict(x)``."""
from .base import Method, NonFiniteLoss
from .d2am import D2AM, D2AMConfig
from .erm import ERM, ERMConfig
from .pdl import PDL, PDLConfig
from .rfm import RFM, RFMConfig

METHODS = {"rfm": (RFM, RFMConfig), "erm": (ERM, ERMConfig), "d2am": (D2AM, D2AMConfig), "pdl": (PDL, PDLConfig)}

__all__ = ["METHODS", "D2AM", "D2AMConfig", "ERM", "ERMConfig", "Method", "NonFiniteLoss", "PDL", "PDLConfig",
           "RFM", "RFMConfig"]
