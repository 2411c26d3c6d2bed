"""``python -m compliance_nlp.crossval``: kept working; the code is ``training.crossval``."""

from __future__ import annotations

from compliance_nlp.training.crossval import cross_validate, file_folds, main, merge_reports

__all__ = ["cross_validate", "file_folds", "main", "merge_reports"]

if __name__ == "__main__":
    raise SystemExit(main())
