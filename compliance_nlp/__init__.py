"""compliance_nlp: text in, analysis out — intent, sentiment, sales-rule findings, PII.

A pure library (no DB, no network, nothing imported from the rest of siyu). Every
message passes it before it is stored; see ``analyze.py`` for the order of work.
"""

from compliance_nlp.analyze import Analyzer, analyze, get_analyzer
from compliance_nlp.pii import PiiMatch
from compliance_nlp.rules import CATEGORIES
from compliance_nlp.types import (
    INTENTS,
    SENTIMENTS,
    Analysis,
    AnalysisError,
    AnalyzerConfig,
    Finding,
    InvalidInputError,
    ModelLoadError,
)

__all__ = [
    "CATEGORIES",
    "INTENTS",
    "SENTIMENTS",
    "Analysis",
    "AnalysisError",
    "Analyzer",
    "AnalyzerConfig",
    "Finding",
    "InvalidInputError",
    "ModelLoadError",
    "PiiMatch",
    "analyze",
    "get_analyzer",
]
