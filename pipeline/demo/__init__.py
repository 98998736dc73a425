"""The synthetic demo corpus in the four official layouts (the real datasets are licensed and absent)."""
from .corpus import DemoConfig, write_demo_corpus

__all__ = ["DemoConfig", "write_demo_corpus"]
