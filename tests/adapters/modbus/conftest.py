"""Fixtures of the Modbus adapter tests: a leak check for anything that opens sockets."""

from __future__ import annotations

import gc
import os
import struct
import threading
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.modbus.simulators.pty import socat_pair


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pty ends from socat (the devices' end, the controller's end)."""
    with socat_pair(tmp_path) as pair:
        yield pair


def _open_sockets() -> set[str]:
    if not os.path.isdir("/proc/self/fd"):  # pragma: no cover - not Linux: skip this part
        return set()
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while listing
            continue
        if target.startswith("socket:"):
            found.add(f"{fd}->{target}")
    return found


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves a socket open or a thread running, or GC closes a socket.

    Request it first so it is torn down last (after the simulators and clients). Sockets that
    only the garbage collector closes show up as ResourceWarnings, recorded here.
    """
    sockets_before = _open_sockets()
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        deadline = time.monotonic() + 2.0
        while True:
            gc.collect()
            leaked_sockets = _open_sockets() - sockets_before
            leaked_threads = [t for t in threading.enumerate() if t not in threads_before]
            if not (leaked_sockets or leaked_threads) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not unclosed, f"closed only by the garbage collector: {unclosed}"
    assert not leaked_threads, f"threads left running: {leaked_threads}"
    assert not leaked_sockets, f"sockets left open: {sorted(leaked_sockets)}"


# ---------------------------------------------------------------------------- SunSpec images


def sunspec_image(models, base=40000, *, values=None, end=True):
    """Literal registers of a SunSpec device: {address: register}.

    ``models`` as for :func:`adapters.modbus.sunspec.device.declared_device`; ``values`` maps
    ``"<model>.<path>"`` to raw registers (a list) or to an integer for a one-register point.
    Points not given are SunSpec's "not implemented" pattern.
    """
    from adapters.modbus import codec
    from adapters.modbus.sunspec.device import declared_device

    device = declared_device(models, base)
    regs = {base: 0x5375, base + 1: 0x6E53}
    rmap = device.register_map("image")
    for fld in rmap.fields:
        raw = fld.expected_registers() or codec.encode(None, fld.kind, length=fld.length)
        for i, r in enumerate(raw):
            regs[fld.address + i] = r
    for m in device.models:  # pad points are not fields: zero them
        for i in range(m.length + 2):
            regs.setdefault(m.address + i, 0)
        for path, n in m.layout.counts.items():
            regs[m.address + m.layout.point(path).offset] = n
    for name, given in (values or {}).items():
        fld = rmap.field(name)
        raw = [given] if isinstance(given, int) else list(given)
        assert len(raw) == fld.count, name
        for i, r in enumerate(raw):
            regs[fld.address + i] = r & 0xFFFF
    if end:
        regs[device.end_address] = 0xFFFF
        regs[device.end_address + 1] = 0
    else:
        regs.pop(device.end_address, None)
        regs.pop(device.end_address + 1, None)
    return regs


@pytest.fixture
def make_sunspec_image():
    return sunspec_image


# ---------------------------------------------------------------------------- in-memory wires


def modbus_crc(data: bytes) -> bytes:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF), low byte first: written here, not imported."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


class FakeSocket:
    """A socket for ModbusTkClient's TCP master: each request is answered by ``responder``.

    ``fileno`` is the write end of a pipe, which select() never reports readable, so
    modbus_tk's flush before each request finds nothing; ``send`` drops what an earlier
    answer left unread, as that flush would.
    """

    def __init__(self, responder):
        self.responder = responder
        self.buffer = b""
        self.requests = []
        self.responses = []
        self.closed = 0
        self._pipe = os.pipe()

    def fileno(self):
        return self._pipe[1]

    def send(self, data):
        self.requests.append(bytes(data))
        answer = self.responder(bytes(data))
        self.responses.append(answer)
        self.buffer = answer
        return len(data)

    def recv(self, n):
        chunk, self.buffer = self.buffer[:n], self.buffer[n:]
        return chunk

    def close(self):
        self.closed += 1
        self.buffer = b""

    def dispose(self):
        for fd in self._pipe:
            os.close(fd)

    def settimeout(self, _t):
        pass

    def setblocking(self, _b):
        pass


class FakeSerial:
    """A pyserial port for RtuLine: each written request is answered by ``responder``."""

    def __init__(self, responder):
        self.responder = responder
        self.buffer = b""
        self.requests = []
        self.responses = []
        self.timeout = 0.1
        self.inter_byte_timeout = None
        self.baudrate = 19200
        self.name = self.port = "fake-serial"
        self.is_open = False

    def open(self):
        self.is_open = True

    def close(self):
        self.is_open = False

    def write(self, data):
        self.requests.append(bytes(data))
        answer = self.responder(bytes(data))
        self.responses.append(answer)
        self.buffer += answer
        return len(data)

    def read(self, n):
        chunk, self.buffer = self.buffer[:n], self.buffer[n:]
        return chunk

    def flush(self):
        pass

    def reset_input_buffer(self):
        self.buffer = b""

    def reset_output_buffer(self):
        pass


def registers_at(address, count):
    """What the fake devices hold: a recognisable pattern."""
    return [(address * 7 + i * 13) & 0xFFFF for i in range(count)]


def valid_pdu(request_pdu):
    """The well-formed answer PDU to a read (3/4) or write (16) request PDU."""
    function, address, count = struct.unpack(">BHH", request_pdu[:5])
    if function == 16:
        return request_pdu[:5]
    regs = registers_at(address, count)
    return bytes([function, 2 * count]) + struct.pack(f">{count}H", *regs)


def tcp_answer(request, pdu=None):
    """A well-formed Modbus TCP answer to ``request`` (same transaction and unit id)."""
    pdu = valid_pdu(request[7:]) if pdu is None else pdu
    return request[:4] + struct.pack(">H", len(pdu) + 1) + request[6:7] + pdu


def rtu_answer(request, pdu=None):
    """A well-formed Modbus RTU answer to ``request`` (same unit, good CRC)."""
    pdu = valid_pdu(request[1:-2]) if pdu is None else pdu
    body = request[:1] + pdu
    return body + modbus_crc(body)


@pytest.fixture
def tcp_fake():
    """``make(responder, unit=1, retries=0)`` -> (ModbusTkClient, FakeSocket), no network."""
    from adapters.modbus.client import ModbusTkClient

    made = []

    def make(responder, unit=1, retries=0):
        client = ModbusTkClient("fake", 502, unit, timeout_s=0.1, retries=retries, backoff_s=0)
        sock = FakeSocket(responder)
        master = client._link.master

        def _open():
            master._sock = sock

        master._do_open = _open
        made.append(sock)
        return client, sock

    yield make
    for sock in made:
        sock.dispose()


@pytest.fixture
def rtu_fake():
    """``make(responder, unit=1, retries=0)`` -> (ModbusTkClient, FakeSerial), no serial port."""
    from adapters.modbus.client import RtuLine

    def make(responder, unit=1, retries=0):
        port = FakeSerial(responder)
        line = RtuLine(port, timeout_s=0.1)
        return line.client(unit, retries=retries, backoff_s=0), port

    return make


@pytest.fixture
def wire():
    """The helpers above, for tests (conftest modules are not importable by name)."""
    return types.SimpleNamespace(
        crc=modbus_crc,
        tcp_answer=tcp_answer,
        rtu_answer=rtu_answer,
        registers_at=registers_at,
        valid_pdu=valid_pdu,
    )
