"""Files and folders a user names: every failure is a one-line ConfigError naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import ConfigError
from controller.userfiles import output_folder, read_text


def test_text_with_and_without_a_bom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello \xc3\xa9")
    (tmp_path / "b.txt").write_text("hello é", encoding="utf-8")
    assert read_text(tmp_path / "a.txt", "x") == read_text(tmp_path / "b.txt", "x") == "hello é"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"a\x00b", r"^order file .*f\.txt is a binary file, not text$"),
        (b"caf\xe9", r"is not UTF-8 text \(byte 0xe9 at offset 3\); save it as UTF-8$"),
    ],
)
def test_binary_and_other_encodings_are_named(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "f.txt").write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        read_text(tmp_path / "f.txt", "order file")


def test_folders_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site file .* is a directory, not a file"):
        read_text(tmp_path, "site file")
    with pytest.raises(ConfigError, match=r"site file not found: .*nope\.toml"):
        read_text(tmp_path / "nope.toml", "site file")


def test_output_folder_is_made_and_checked(tmp_path: Path) -> None:
    made = output_folder(tmp_path / "a" / "b")
    assert made.is_dir()
    assert list(made.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="it is a file, not a folder"):
        output_folder(tmp_path / "file", "demo's output folder")
    with pytest.raises(ConfigError, match=r"cannot use .*file/sub as the output folder"):
        output_folder(tmp_path / "file" / "sub")
    with pytest.raises(ConfigError, match="cannot use /proc/peergrid-x as the output folder"):
        output_folder("/proc/peergrid-x")
