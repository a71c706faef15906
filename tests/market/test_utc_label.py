"""Times in messages: ISO 8601 in UTC with Z, from datetimes and from Unix seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from market.domain import utc_label


@pytest.mark.parametrize(
    ("moment", "label"),
    [
        (datetime(2026, 6, 21, 9, tzinfo=UTC), "2026-06-21T09:00Z"),
        (datetime(2026, 6, 21, 11, tzinfo=timezone(timedelta(hours=2))), "2026-06-21T09:00Z"),
        (datetime(2026, 6, 21, 9, 7, 30, tzinfo=UTC), "2026-06-21T09:07:30Z"),
        (1_782_032_400, "2026-06-21T09:00Z"),
        (0, "1970-01-01T00:00Z"),
        (10**20, "100000000000000000000 (Unix s)"),
        (datetime(2026, 6, 21, 9), "2026-06-21T09:00:00"),  # noqa: DTZ001 - a naive one
    ],
)
def test_labels(moment: datetime | int, label: str) -> None:
    assert utc_label(moment) == label
