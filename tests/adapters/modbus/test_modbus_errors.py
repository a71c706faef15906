"""The Modbus adapter's errors: one root, and the builtins callers catch them by."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.errors import AdapterError
from adapters.modbus import errors, frames
from adapters.modbus.client import ModbusTkClient
from adapters.modbus.protocol import EXCEPTION_NAMES, ExceptionCode
from adapters.modbus.reading import Backoff
from adapters.modbus.simulators import clear_sky_profile, series_profile


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.DeviceUnavailable, ConnectionError),
        (errors.AnswerTimeout, TimeoutError),
        (errors.ConnectionClosed, ConnectionResetError),
        (errors.WriteRefused, ValueError),
        (errors.RegisterMapError, ValueError),
        (errors.CodecError, ValueError),
        (errors.InvalidArgument, ValueError),
        (errors.SimulatorNotStarted, TimeoutError),
    ],
)
def test_errors_are_adapter_errors_and_their_builtin(error, builtin):
    assert issubclass(error, AdapterError)
    assert issubclass(error, builtin)


def test_every_error_is_drawn_in_the_module_docstring():
    for name in errors.__all__:
        assert name in (errors.__doc__ or ""), name


def test_device_error_names_its_code():
    exc = errors.DeviceError(ExceptionCode.ILLEGAL_DATA_ADDRESS, "read 40000")
    assert exc.code == 2
    assert str(exc) == "read 40000: Modbus exception code 2 (illegal data address)"
    assert EXCEPTION_NAMES[11] == "gateway target device failed to respond"
    assert "unknown exception" in str(errors.DeviceError(99))


@pytest.mark.parametrize(
    "call",
    [
        lambda: frames.read_request(3, 0, 126),
        lambda: ModbusTkClient("127.0.0.1", unit_id=256),
        lambda: Backoff(factor=0.5),
        lambda: series_profile(datetime(2026, 1, 1, tzinfo=UTC), 0, [1.0]),
        lambda: clear_sky_profile(1000, sunrise_h=20, sunset_h=6),
    ],
)
def test_bad_arguments_are_invalid_argument(call):
    with pytest.raises(errors.InvalidArgument):
        call()
