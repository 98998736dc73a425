"""Training methods: one class per method, each with ``update(batch)`` and ``predict(x)``."""
from .base import Method, NonFiniteLoss
from .ccdd import CCDD, CCDDConfig, CCDDVideo, CCDDVideoConfig
from .d2am import D2AM, D2AMConfig
from .erm import ERM, ERMConfig
from .metapattern import MetaPattern, MetaPatternConfig
from .pdl import PDL, PDLConfig
from .rfm import RFM, RFMConfig

METHODS = {"rfm": (RFM, RFMConfig), "erm": (ERM, ERMConfig), "d2am": (D2AM, D2AMConfig), "pdl": (PDL, PDLConfig),
           "ccdd": (CCDD, CCDDConfig), "ccdd-video": (CCDDVideo, CCDDVideoConfig),
           "metapattern": (MetaPattern, MetaPatternConfig)}

__all__ = ["METHODS", "CCDD", "CCDDConfig", "CCDDVideo", "CCDDVideoConfig", "D2AM", "D2AMConfig", "ERM", "ERMConfig", "MetaPattern", "MetaPatternConfig", "Method", "NonFiniteLoss", "PDL", "PDLConfig",
           "RFM", "RFMConfig"]
