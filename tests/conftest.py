"""Shared fixtures: one small demo corpus per test session (real videos, real faces)."""
from __future__ import annotations

import pytest

from pipeline.demo import DemoConfig, write_demo_corpus

SMALL = DemoConfig(seed=3, frames=6, subjects_per_split=1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_demo_corpus(root, SMALL, quiet=True)
    return root
