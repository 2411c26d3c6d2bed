"""``python -m compliance_nlp.labels FILE``: kept working for the annotators' brief.

The code is ``compliance_nlp.training.labels``.
"""

from __future__ import annotations

from compliance_nlp.training.labels import check_labels, main

__all__ = ["check_labels", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
