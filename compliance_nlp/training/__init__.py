"""compliance_nlp's training side: how the shipped models and thresholds were made.

``train`` (``siyu nlp train``), ``evaluate`` (``siyu nlp eval``), ``crossval`` (threshold
calibration holding out whole annotators), ``labels`` (the check every labelled file
passes), ``build_corpus`` and ``grammar`` with their phrase data in ``phrases/`` (the
generated training corpus), and ``data/`` (that corpus, the hand-written development
pool and the blind sets, with the annotators' briefs).

The runtime (``analyze`` and what it uses) never imports this package — an import
contract in pyproject.toml holds it. Training runs from a source checkout.
"""
