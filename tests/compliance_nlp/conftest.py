from __future__ import annotations

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig, get_analyzer


@pytest.fixture(scope="session")
def analyzer() -> Analyzer:
    """The shipped configuration: rules + shipped models."""
    return get_analyzer(AnalyzerConfig())


@pytest.fixture(scope="session")
def rules_only() -> Analyzer:
    return get_analyzer(AnalyzerConfig(use_model=False))
