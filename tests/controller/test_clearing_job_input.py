"""``peergrid clear``'s input: order files as spreadsheets write them, and options in range."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from controller.clearing_job import clear_orders_file, read_order_rows
from controller.errors import ConfigError
from market.errors import InvalidOrder

HEADER = "order_id,participant,bus,side,energy_wh,limit_price\n"
ROWS = "s1,alice,Bus R18,sell,4000,90000\nb1,carol,Bus R15,buy,3000,320000\n"
EXPECTED = [
    {
        "order_id": "s1",
        "participant": "alice",
        "bus": "Bus R18",
        "side": "sell",
        "energy_wh": "4000",
        "limit_price": "90000",
    },
    {
        "order_id": "b1",
        "participant": "carol",
        "bus": "Bus R15",
        "side": "buy",
        "energy_wh": "3000",
        "limit_price": "320000",
    },
]


def write(tmp_path: Path, content: str | bytes, name: str = "orders.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text",
    [
        HEADER + ROWS,
        "\ufeff" + HEADER + ROWS,  # a spreadsheet's byte order mark
        HEADER.replace(",", ", ") + ROWS.replace(",", ", "),  # spaces after the commas
        "\ufeff" + HEADER.replace(",", ", ") + ROWS.replace(",", ", "),
        HEADER + "\n" + ROWS.replace("\n", "\r\n") + "\n\n",  # CRLF and blank lines
    ],
)
def test_spreadsheet_csv_reads_like_plain_csv(tmp_path: Path, text: str) -> None:
    assert read_order_rows(write(tmp_path, text)) == EXPECTED


def test_json_with_a_bom_is_read(tmp_path: Path) -> None:
    body = "\ufeff" + json.dumps({"orders": EXPECTED})
    assert read_order_rows(write(tmp_path, body, "orders.json")) == EXPECTED


@pytest.mark.parametrize(
    ("content", "name", "error", "match"),
    [
        ("", "o.csv", InvalidOrder, "empty; expected the header"),
        (
            HEADER.replace("limit_price", "limit_prise") + "x,a,B,buy,1,1\n",
            "o.csv",
            InvalidOrder,
            r"unknown column\(s\) 'limit_prise' \(did you mean 'limit_price'\?\)",
        ),
        (
            HEADER.replace("\n", ",colour\n") + "x,a,B,buy,1,1,red\n",
            "o.csv",
            InvalidOrder,
            r"unknown column\(s\) 'colour'; the columns are order_id",
        ),
        (HEADER.replace("\n", ",side\n"), "o.csv", InvalidOrder, "side appear more than once"),
        (
            HEADER + ROWS + "x,a,B,buy,1\n",
            "o.csv",
            InvalidOrder,
            r"row 3 \(line 4\) has 5 field\(s\), the header 6",
        ),
        (HEADER + 'x,"a\n', "o.csv", InvalidOrder, "not valid CSV"),
        ("[" * 100_000, "o.json", InvalidOrder, "JSON nested more than 16 levels deep"),
        ('{"orders": [], "x": 1}', "o.json", InvalidOrder, "no other key"),
        ('"orders"', "o.json", InvalidOrder, "expected a list of order objects"),
        ("[1]", "o.json", InvalidOrder, "row 1: expected an order object, got int"),
        ('[{"limit_prise": 1}]', "o.json", InvalidOrder, "did you mean 'limit_price'"),
        (b"\x00\x01\x02", "o.csv", ConfigError, "is a binary file, not text"),
        (
            (HEADER + "x,Jos\xe9,B,buy,1,1\n").encode("latin-1"),
            "o.csv",
            ConfigError,
            r"is not UTF-8 text \(byte 0xe9 at offset 57\); save it as UTF-8",
        ),
    ],
)
def test_unreadable_order_files_are_named(
    tmp_path: Path, content: str | bytes, name: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        read_order_rows(write(tmp_path, content, name))


def test_a_folder_or_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        read_order_rows(tmp_path)
    with pytest.raises(ConfigError, match=r"order file not found: .*nope\.csv"):
        read_order_rows(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"vm_min_pu": math.nan}, "vm_min_pu must be a voltage from 0.5 to 1.5 p.u., got nan"),
        ({"vm_max_pu": math.inf}, "vm_max_pu must be a voltage"),
        ({"vm_min_pu": 0.2}, "vm_min_pu must be a voltage"),
        ({"vm_min_pu": 1.05}, r"vm_min_pu \(1.05\) must be below vm_max_pu \(1.05\)"),
        ({"import_price": 10**9 + 1}, "import_price must be from 0 to 1_000_000_000"),
        ({"export_price": -1}, "export_price must be from 0"),
        ({"export_price": 1.5}, "export_price must be a whole number"),
        ({"export_price": 400_000}, r"export_price \(400000\) must not exceed import_price"),
        ({"time_limit_s": 0.0}, "time_limit_s must be more than 0"),
        ({"time_limit_s": math.nan}, "time_limit_s must be more than 0"),
        ({"time_step": -1}, "time step -1 out of range 0..35135"),
        ({"time_step": 10**12}, "out of range"),
    ],
)
def test_options_out_of_range_are_refused_before_any_work(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    missing = tmp_path / "never-read.csv"  # the options are checked before the file is read
    with pytest.raises(ConfigError, match=match):
        clear_orders_file("no-such-grid", missing, **options)


def test_deep_json_is_refused_even_with_a_raised_recursion_limit(tmp_path: Path) -> None:
    """py-evm raises the limit to 100 000; json.loads would then crash the process."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(InvalidOrder, match="nested more than 16 levels"):
            read_order_rows(write(tmp_path, "[" * 200_000, "deep.json"))
    finally:
        sys.setrecursionlimit(old)
