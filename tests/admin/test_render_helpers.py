"""The template helpers the busiest pages lean on give what their plain forms give."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from admin.fragments import _ISO_CUTS, SHANGHAI
from admin.fragments import cst as _cst


def test_cst_is_strftime_in_shanghai() -> None:
    rng = random.Random(7)
    # China observed summer time 1986-1991: the zone's own offsets, not a fixed +8.
    start = datetime(1985, 1, 1, tzinfo=UTC)
    moments = [
        start
        + timedelta(seconds=rng.randint(0, 50 * 365 * 86400), microseconds=rng.randint(0, 999_999))
        for _ in range(3000)
    ]
    moments += [datetime(2026, 12, 31, 16, 0, tzinfo=UTC), datetime(1, 1, 2, tzinfo=UTC)]
    for moment in moments:
        for fmt in [*_ISO_CUTS, "%Y年%m月%d日", "%H:%M"]:
            assert _cst(moment, fmt) == moment.astimezone(SHANGHAI).strftime(fmt), (moment, fmt)
    assert _cst(None) == ""
    assert _cst(datetime(2026, 5, 1, 1, 2, 3, tzinfo=UTC)) == "2026-05-01 09:02:03"
