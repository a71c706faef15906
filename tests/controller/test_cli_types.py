"""The argparse types: NaN, infinities and out-of-range numbers are refused with the flag's name."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller import cli_types
from controller.cli import main


@pytest.mark.parametrize(
    ("parse", "good", "value"),
    [
        (cli_types.finite_float, "-1.5", -1.5),
        (cli_types.positive_seconds, "0.2", 0.2),
        (cli_types.per_unit_voltage, "0.95", 0.95),
        (cli_types.price_per_kwh, "1_000_000_000", 10**9),
        (cli_types.positive_int, "16", 16),
        (cli_types.non_negative_int, "0", 0),
        (cli_types.tcp_port, "65535", 65535),
        (cli_types.tcp_port_or_zero, "0", 0),
        (cli_types.modbus_unit, "247", 247),
        (cli_types.baud_rate, "115200", 115200),
        (cli_types.utc_time, "2026-06-21T09:00Z", datetime(2026, 6, 21, 9, tzinfo=UTC)),
        (
            cli_types.utc_time,
            "2026-06-21T11:00+02:00",
            datetime(2026, 6, 21, 11, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_good_values_pass(parse: object, good: str, value: object) -> None:
    assert parse(good) == value  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "bad", "message"),
    [
        (cli_types.finite_float, "nan", "must be a finite number, got 'nan'"),
        (cli_types.finite_float, "-inf", "must be a finite number"),
        (cli_types.finite_float, "x", "not a number: 'x'"),
        (cli_types.positive_seconds, "0", "must be more than 0"),
        (cli_types.positive_seconds, "1e9", "at most 86400 seconds"),
        (cli_types.per_unit_voltage, "nan", "finite"),
        (cli_types.per_unit_voltage, "3", "must be a voltage from 0.5 to 1.5 p.u., got '3'"),
        (cli_types.price_per_kwh, "1e308", "a whole number from 0 to 1_000_000_000"),
        (cli_types.price_per_kwh, "-1", "a whole number from 0"),
        (cli_types.positive_int, "0", "must be a whole number from 1"),
        (cli_types.non_negative_int, "1.5", "must be a whole number from 0"),
        (cli_types.tcp_port, "70000", "must be a TCP port, a whole number from 1 to 65_535"),
        (cli_types.tcp_port, "0", "from 1"),
        (cli_types.tcp_port_or_zero, "-1", "from 0 to 65_535"),
        (cli_types.modbus_unit, "300", "a Modbus unit id, a whole number from 1 to 247"),
        (cli_types.baud_rate, "0", "a serial speed"),
        (cli_types.utc_time, "garbage", "not an ISO 8601 time"),
        (cli_types.utc_time, "2026-06-21T09:00", "must carry a time zone"),
    ],
)
def test_bad_values_are_refused(parse: object, bad: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(bad)  # type: ignore[operator]


def test_usage_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["clear", "--grid", "cigre-lv", "--orders", "x.csv", "--vm-min", "nan"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "peergrid clear: error: argument --vm-min: must be a finite number, got 'nan' "
        "(see 'peergrid clear --help')\n"
    )
