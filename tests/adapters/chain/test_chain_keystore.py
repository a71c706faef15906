"""Keystores (Web3 Secret Storage JSON): written 0600 and never over a file, read by address
without a password, opened only with the right one, and every failure names the file and the
problem without a byte of key material."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from eth_account import Account

from adapters.chain import (
    InvalidAccount,
    KeystoreError,
    KeystoreExists,
    WrongPassword,
    account_from_key,
    checksum_address,
    keystore_address,
    new_account,
    open_keystore,
    write_keystore,
)
from adapters.chain.keystore import KEYSTORE_MODE, MAX_KEYSTORE_BYTES

PASSWORD = "s3cret-Keystore-pw"
FAST = 2**10  # scrypt cost for tests (the default, 2**18, takes about a second)


def key_forms(account) -> list[str]:
    """Every way a key's hex could show up: with and without 0x, either case."""
    bare = account.key.hex().removeprefix("0x")
    return [bare, bare.upper(), "0x" + bare, "0X" + bare.upper()]


def assert_no_secret(text: str, account, password: str = PASSWORD) -> None:
    lowered = text.lower()
    for form in key_forms(account):
        assert form.lower() not in lowered
    assert password not in text


def test_round_trip_mode_0600_and_address_without_password(tmp_path: Path) -> None:
    account = new_account()
    path = tmp_path / "operator.json"
    old_umask = os.umask(0o000)  # even a permissive umask gives an owner-only file
    try:
        assert write_keystore(path, account, PASSWORD, scrypt_n=FAST) == account.address
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == KEYSTORE_MODE == 0o600
    assert keystore_address(path) == account.address
    assert open_keystore(path, PASSWORD).key == account.key
    text = path.read_text()
    assert_no_secret(text, account)
    doc = json.loads(text)
    assert doc["version"] == 3
    assert doc["crypto"]["kdf"] == "scrypt"
    # eth-account (and so geth, cast wallet) opens what we write
    assert Account.decrypt(doc, PASSWORD) == account.key


def test_reads_keystores_other_tools_write(tmp_path: Path) -> None:
    account = new_account()
    for kdf in ("scrypt", "pbkdf2"):
        path = tmp_path / f"{kdf}.json"
        path.write_text(json.dumps(Account.encrypt(account.key, PASSWORD, kdf=kdf, iterations=2)))
        assert open_keystore(path, PASSWORD).address == account.address
    # geth's older files spell it "Crypto"
    doc = Account.encrypt(account.key, PASSWORD, iterations=FAST)
    doc["Crypto"] = doc.pop("crypto")
    path = tmp_path / "geth.json"
    path.write_text(json.dumps(doc))
    assert open_keystore(path, PASSWORD).address == account.address


def test_never_overwrites_and_refuses_empty_passwords(tmp_path: Path) -> None:
    account = new_account()
    path = tmp_path / "k.json"
    write_keystore(path, account, PASSWORD, scrypt_n=FAST)
    before = path.read_bytes()
    with pytest.raises(KeystoreExists, match="already there") as exc:
        write_keystore(path, new_account(), PASSWORD, scrypt_n=FAST)
    assert isinstance(exc.value, FileExistsError)
    assert isinstance(exc.value, ValueError)  # bad input for the command line
    assert path.read_bytes() == before
    with pytest.raises(KeystoreError, match="empty password"):
        write_keystore(tmp_path / "e.json", account, "")
    assert not (tmp_path / "e.json").exists()
    with pytest.raises(KeystoreError, match="cannot create"):
        write_keystore(tmp_path / "no" / "such" / "k.json", account, PASSWORD, scrypt_n=FAST)


def test_wrong_password_names_the_file_and_no_secret(tmp_path: Path) -> None:
    account = new_account()
    path = tmp_path / "k.json"
    write_keystore(path, account, PASSWORD, scrypt_n=FAST)
    with pytest.raises(WrongPassword, match="wrong password") as exc:
        open_keystore(path, "guess")
    message = str(exc.value)
    assert str(path) in message
    assert_no_secret(message, account)
    assert "guess" not in message
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__  # no chained eth-account frame either


def _valid_doc(account) -> dict:
    return Account.encrypt(account.key, PASSWORD, iterations=FAST)


def _malformed_cases(account) -> dict[str, object]:
    doc = _valid_doc(account)
    other = Account.encrypt(new_account().key, PASSWORD, iterations=FAST)
    swapped = dict(other, address=doc["address"])  # another key under this address
    big_n = json.loads(json.dumps(doc))
    big_n["crypto"]["kdfparams"]["n"] = 2**30
    not_hex = json.loads(json.dumps(doc))
    not_hex["crypto"]["ciphertext"] = "zz" + doc["crypto"]["ciphertext"][2:]
    return {
        "not JSON": "this is not json",
        "not a JSON object": "[1, 2, 3]",
        "version must be 3": json.dumps(dict(doc, version=1)),
        "no crypto object": json.dumps({"version": 3, "address": doc["address"]}),
        "crypto.kdf must be scrypt or pbkdf2": json.dumps(
            dict(doc, crypto=dict(doc["crypto"], kdf="argon2"))
        ),
        "power of two": json.dumps(big_n),
        "must be hex": json.dumps(not_hex),
        "cipher must be aes-128-ctr": json.dumps(
            dict(doc, crypto=dict(doc["crypto"], cipher="aes-256-gcm"))
        ),
        "holds the key of another": json.dumps(swapped),
        "address is not": json.dumps(dict(doc, address="xyz")),
    }


def test_malformed_keystores_are_refused_naming_the_problem(tmp_path: Path) -> None:
    account = new_account()
    for i, (problem, text) in enumerate(_malformed_cases(account).items()):
        path = tmp_path / f"bad-{i}.json"
        path.write_text(str(text))
        with pytest.raises(KeystoreError) as exc:
            open_keystore(path, PASSWORD)
        message = str(exc.value)
        assert problem in message, (problem, message)
        assert str(path) in message
        assert_no_secret(message, account)
        assert exc.value.__cause__ is None


def test_unreadable_inputs_are_keystore_errors(tmp_path: Path) -> None:
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (MAX_KEYSTORE_BYTES + 1))
    no_address = tmp_path / "anonymous.json"
    doc = _valid_doc(new_account())
    del doc["address"]
    no_address.write_text(json.dumps(doc))
    cases = {
        tmp_path / "missing.json": "cannot read",
        tmp_path: "is a folder",
        binary: "not UTF-8",
        huge: "larger than",
        no_address: "records no address",
    }
    for path, problem in cases.items():
        with pytest.raises(KeystoreError, match=problem):
            keystore_address(path)
    # a keystore without an address still opens with its password
    assert open_keystore(no_address, PASSWORD).address


def test_keys_and_addresses_are_not_echoed_in_errors() -> None:
    account = new_account()
    key = account.key.hex()
    with pytest.raises(InvalidAccount) as exc:
        account_from_key(key[:-1] + "g")  # one bad digit
    assert key[:-1] not in str(exc.value)
    assert exc.value.__cause__ is None
    # a key pasted where an address belongs is not echoed either
    with pytest.raises(InvalidAccount, match="66 characters") as exc:
        checksum_address("0x" + key.removeprefix("0x"))
    assert_no_secret(str(exc.value), account)
    with pytest.raises(InvalidAccount, match="'0x12'"):  # a short mistake is quoted
        checksum_address("0x12")


def test_new_accounts_are_random() -> None:
    keys = {new_account().key for _ in range(8)}
    assert len(keys) == 8
