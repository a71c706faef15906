"""Fuzz: mutated answers through the whole client path (modbus_tk MAC layer, framing, PDU
checks, retries), TCP and RTU, in memory, over real loopback sockets and over a real serial
pair (socat). Zero crashes, and zero values taken from invalid frames.

The harness (:func:`fuzz`) calls :class:`ModbusTkClient` directly, never through a reader:
the client's contract is that device trouble is a :class:`DeviceError` or a
:class:`DeviceUnavailable`, so any other exception that escapes it is a crash, reported
with the case that caused it (:class:`FuzzFailure`). The oracle below is an independent
statement of what a well-formed answer is: when it says "invalid", the client must raise
DeviceUnavailable; when it says "values", the client must return exactly the registers in
the frame (a flipped data bit is a well-formed frame that no protocol can tell from the
truth); "exception" must be a DeviceError with that code.

:func:`test_the_harness_reports_an_injected_parser_bug` shows the harness can fail: a
ZeroDivisionError put into the frame parser, on answers the oracle calls invalid (so that an
outcome check alone, with a client that turned every exception into "invalid frame", would
pass), is reported on every transport.

The last section checks the boundary one level up: a bug that escapes the client becomes a
MISSING reading (reader, poller) or a failed write, naming the exception, logged at ERROR
with its traceback, and the other devices go on.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import serial
from modbus_tk import exceptions as tk_errors
from modbus_tk import modbus_tcp

from adapters.modbus import frames
from adapters.modbus.client import ModbusTkClient, RtuLine
from adapters.modbus.discovered import DiscoveredMap, DiscoveringReader
from adapters.modbus.errors import DeviceError, DeviceUnavailable, InvalidFrame
from adapters.modbus.mapfiles import load_register_map
from adapters.modbus.polling import poll_all
from adapters.modbus.reading import DeviceReader
from adapters.modbus.simulators import BatterySim, LoadMeterSim, PVInverterSim, constant_profile
from adapters.modbus.writing import DeviceWriter
from market.domain import (
    BusId,
    DeviceId,
    Interval,
    ParticipantId,
    ReadingQuality,
    Setpoint,
    SetpointKind,
)

SEED = 20260621
IN_MEMORY_CASES = 10_000  # per transport
LOOPBACK_CASES = 2_000
SERIAL_CASES = 1_000
RTU_UNIT = 17
# Real transports: an answer is never waited for in these tests (a TCP device hangs up, a
# serial one sends exactly what the client reads), so a generous timeout costs nothing and
# keeps a slow machine from turning a late answer into a wrong verdict.
REAL_TIMEOUT_S = 5.0

Outcome = tuple[object, ...]
Exchanges = list[tuple[bytes, bytes]]


# ---------------------------------------------------------------------------- mutations


def _mutate(frame: bytes, rng: random.Random, header: int) -> bytes:
    """One to three random corruptions, biased towards the bytes that carry structure."""
    data = bytearray(frame)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(10)
        at = rng.randrange(min(len(data), header + 3)) if data and rng.random() < 0.7 else None
        if at is None and data:
            at = rng.randrange(len(data))
        if op == 0 and data:  # flip a bit
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # replace a byte
            data[at] = rng.randrange(256)
        elif op == 2:  # cut
            del data[rng.randrange(len(data) + 1) :]
        elif op == 3:  # trailing junk
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 4:  # insert a byte
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif op == 5 and data:  # drop a byte
            del data[at]
        elif op == 6:  # noise instead of an answer
            data = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 24)))
        elif op == 7 and len(data) > header:  # an exception answer, maybe for another function
            fc = data[header] | 0x80 if rng.random() < 0.7 else rng.randrange(0x80, 0x100)
            data[header:] = bytes([fc, rng.randrange(1, 12)])
            if header == 7 and rng.random() < 0.7:  # TCP: with a matching length field
                data[4:6] = b"\x00\x03"
        elif op == 8 and len(data) > header + 1:  # another function code or byte count
            data[header + rng.randrange(2)] = rng.choice((1, 2, 3, 4, 6, 16, 23, 43, 0x83))
        elif op == 9 and len(data) > header + 1:  # byte count off by a little
            data[header + 1] = (data[header + 1] + rng.choice((-2, -1, 1, 2))) & 0xFF
    return bytes(data)


def _rtu_length(head: bytes) -> int:
    """Bytes of an RTU answer as its first 3 declare them (3: a function never asked for)."""
    fc = head[1]
    if fc & 0x80:
        return 5
    if fc in (3, 4):
        return 5 + head[2]
    if fc in (6, 16):
        return 8
    return 3


def _fit_to_declared_length(answer: bytes, rng: random.Random) -> bytes:
    """Pad (random bytes) or trim ``answer`` to the length its first 3 bytes declare.

    A serial line has no end of frame but silence: a cut answer costs the client a whole
    timeout, and bytes beyond the declared length would arrive as the start of the next
    answer. Over the real serial pair every answer is therefore exactly as long as it says
    (garbled inside); cut answers and trailing junk are fuzzed in memory and over TCP.
    """
    data = bytearray(answer)
    while len(data) < 3:
        data.append(rng.randrange(256))
    total = _rtu_length(bytes(data[:3]))
    while len(data) < total:
        data.append(rng.randrange(256))
    return bytes(data[:total])


# ---------------------------------------------------------------------------- the oracle


def _pdu_outcome(pdu: bytes, request_pdu: bytes) -> Outcome:
    function = request_pdu[0]
    if len(pdu) == 2 and pdu[0] == function | 0x80:
        return ("exception", pdu[1])
    if function == 16:
        return ("ok",) if pdu == request_pdu[:5] else ("invalid",)
    count = struct.unpack(">H", request_pdu[3:5])[0]
    if len(pdu) == 2 + 2 * count and pdu[0] == function and pdu[1] == 2 * count:
        return ("values", list(struct.unpack(f">{count}H", pdu[2:])))
    return ("invalid",)


def tcp_oracle(request: bytes, answer: bytes) -> Outcome:
    if len(answer) < 6:
        return ("invalid",)
    _, protocol, length = struct.unpack(">HHH", answer[:6])
    if protocol != 0 or not 2 <= length <= 254 or len(answer) < 6 + length:
        return ("invalid",)
    frame = answer[: 6 + length]  # the rest belongs to the stream after it
    if frame[:2] != request[:2] or frame[6] != request[6]:
        return ("invalid",)
    return _pdu_outcome(frame[7:], request[7:])


def rtu_oracle(request: bytes, answer: bytes, crc: Callable[[bytes], bytes]) -> Outcome:
    if len(answer) < 3:
        return ("invalid",)
    fc = answer[1]
    if fc & 0x80:
        total = 5
    elif fc in (3, 4):
        total = 5 + answer[2]
    elif fc in (6, 16):
        total = 8
    else:
        return ("invalid",)
    if len(answer) < total:
        return ("invalid",)
    frame = answer[:total]
    if frame[0] != request[0] or crc(frame[:-2]) != frame[-2:]:
        return ("invalid",)
    return _pdu_outcome(frame[1:-2], request[1:-2])


# ---------------------------------------------------------------------------- the harness


class FuzzFailure(AssertionError):
    """A case the client got wrong: an exception escaped it, or its outcome is not the oracle's.

    Attributes
    ----------
    transport, index : str, int
        Where and which case (with the seed, enough to replay it).
    request, answer : bytes
        What went over the wire (empty if nothing did).
    expected : tuple or None
        The oracle's outcome (``None`` if nothing went over the wire).
    got : tuple or None
        The client's outcome (``None`` when an exception escaped).
    error : BaseException or None
        The escaped exception.
    """

    def __init__(
        self,
        transport: str,
        index: int,
        request: bytes,
        answer: bytes,
        expected: Outcome | None,
        got: Outcome | None,
        error: BaseException | None = None,
    ) -> None:
        self.transport = transport
        self.index = index
        self.request = request
        self.answer = answer
        self.expected = expected
        self.got = got
        self.error = error
        what = (
            f"{type(error).__name__} escaped the client: {error}"
            if error is not None
            else f"client said {got}, the oracle {expected}"
        )
        super().__init__(
            f"{transport} case {index}: {what} "
            f"(request {request.hex() or '-'}, answer {answer.hex() or '-'})"
        )


def _request(rng: random.Random) -> tuple[str, str, int, int]:
    if rng.random() < 0.8:
        count = rng.choice((1, 2, rng.randrange(1, 126)))
        return ("read", rng.choice(("holding", "input")), rng.randrange(0, 65536 - count), count)
    count = rng.randrange(1, 20)
    return ("write", "holding", rng.randrange(0, 65536 - count), count)


def _call(client: ModbusTkClient, op: str, table: str, address: int, count: int) -> Outcome:
    """One request; the client's own errors are outcomes, anything else propagates."""
    try:
        if op == "read":
            return ("values", client.read_registers(table, address, count))
        client.write_registers(address, list(range(count)))
    except DeviceError as exc:
        return ("exception", exc.code)
    except DeviceUnavailable:
        return ("invalid",)
    return ("ok",)


def fuzz(
    client: ModbusTkClient,
    exchanges: Exchanges,
    oracle: Callable[[bytes, bytes], Outcome],
    rng: random.Random,
    cases: int,
    *,
    transport: str,
    after_each: Callable[[], None] | None = None,
) -> Counter[str]:
    """Send ``cases`` random requests through ``client``; check each against the oracle.

    Parameters
    ----------
    client : ModbusTkClient
        Called directly (``retries=0``: one exchange per request).
    exchanges : list of (bytes, bytes)
        The device's log of (request, answer), appended to before it answers.
    oracle : callable
        ``(request, answer) -> outcome``.
    rng : random.Random
        Draws the requests (the device has its own).
    cases : int
        Requests to send.
    transport : str
        For the report.
    after_each : callable, optional
        Called after each case (a TCP test closes the connection the device hung up).

    Returns
    -------
    Counter
        Outcomes by kind (``invalid``, ``values``, ``exception``, ``ok``).

    Raises
    ------
    FuzzFailure
        At the first case whose outcome is wrong or that let an exception escape.
    """
    outcomes: Counter[str] = Counter()
    for index in range(cases):
        op, table, address, count = _request(rng)
        before = len(exchanges)
        try:
            got = _call(client, op, table, address, count)
        except Exception as exc:  # the verdict: anything but the client's own errors is a crash
            request, answer = exchanges[-1] if len(exchanges) > before else (b"", b"")
            expected = oracle(request, answer) if request else None
            raise FuzzFailure(transport, index, request, answer, expected, None, exc) from exc
        if len(exchanges) != before + 1:
            raise FuzzFailure(transport, index, b"", b"", None, got)
        request, answer = exchanges[-1]
        expected = oracle(request, answer)
        if got != expected:
            raise FuzzFailure(transport, index, request, answer, expected, got)
        outcomes[str(got[0])] += 1
        if after_each is not None:
            after_each()
    return outcomes


def _recorded(respond: Callable[[bytes], bytes], log: Exchanges) -> Callable[[bytes], bytes]:
    def answer(request: bytes) -> bytes:
        reply = respond(request)
        log.append((request, reply))
        return reply

    return answer


# ---------------------------------------------------------------------------- real devices


class _MutatingTcpDevice:
    """A TCP 'device' on 127.0.0.1 that answers each request with a mutated frame, then hangs
    up (so a cut answer ends in EOF at once, and trailing junk never reaches another case)."""

    def __init__(self, rng: random.Random, tcp_answer: Callable[[bytes], bytes]) -> None:
        self.rng = rng
        self.tcp_answer = tcp_answer
        self.exchanges: Exchanges = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _read_exact(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return buf
            buf += chunk
        return buf

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(REAL_TIMEOUT_S)
                try:
                    head = self._read_exact(conn, 6)
                    if len(head) < 6:
                        continue
                    request = head + self._read_exact(conn, struct.unpack(">H", head[4:6])[0])
                    answer = _mutate(self.tcp_answer(request), self.rng, 7)
                    self.exchanges.append((request, answer))
                    conn.sendall(answer)
                except OSError:  # the client went away first: its case reports it
                    continue

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


class _MutatingSerialDevice:
    """A serial 'device' on one end of a socat pair: reads each RTU request whole, answers
    it with a mutated frame fitted to its declared length (:func:`_fit_to_declared_length`).
    """

    def __init__(
        self,
        device: str,
        respond: Callable[[bytes], bytes],
    ) -> None:
        self.respond = respond
        self.exchanges: Exchanges = []
        self.port = serial.Serial(device, 115200, timeout=0.05)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_exact(self, n: int, buf: bytes = b"") -> bytes | None:
        while len(buf) < n:
            if self.stopping.is_set():
                return None
            buf += self.port.read(n - len(buf))
        return buf

    def _serve(self) -> None:
        while True:
            head = self._read_exact(7)  # unit, function, address, count, then 1 more byte
            if head is None:
                return
            total = 9 + head[6] if head[1] == 16 else 8
            request = self._read_exact(total, head)
            if request is None:
                return
            answer = self.respond(request)
            self.exchanges.append((request, answer))
            self.port.write(answer)
            self.port.flush()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.port.close()


# ---------------------------------------------------------------------------- transports
#
# Each runs the harness on one transport and returns its outcomes; the tests below call
# them as they are (the fuzz) and with a bug injected (the harness must report it).


def fuzz_tcp_in_memory(tcp_fake, wire, seed: int, cases: int) -> Counter[str]:
    rng = random.Random(seed)
    log: Exchanges = []
    client, _ = tcp_fake(_recorded(lambda request: _mutate(wire.tcp_answer(request), rng, 7), log))
    return fuzz(client, log, tcp_oracle, rng, cases, transport="TCP in memory")


def fuzz_rtu_in_memory(rtu_fake, wire, seed: int, cases: int) -> Counter[str]:
    rng = random.Random(seed)

    def respond(request: bytes) -> bytes:
        mutated = _mutate(wire.rtu_answer(request), rng, 1)
        if len(mutated) > 2 and rng.random() < 0.5:  # a good CRC over a bad frame
            mutated = mutated[:-2] + wire.crc(mutated[:-2])
        return mutated

    log: Exchanges = []
    client, _ = rtu_fake(_recorded(respond, log), unit=RTU_UNIT)

    def oracle(request: bytes, answer: bytes) -> Outcome:
        return rtu_oracle(request, answer, wire.crc)

    return fuzz(client, log, oracle, rng, cases, transport="RTU in memory")


def fuzz_tcp_loopback(wire, seed: int, cases: int) -> Counter[str]:
    device = _MutatingTcpDevice(random.Random(seed), wire.tcp_answer)
    client = ModbusTkClient("127.0.0.1", device.port, 1, timeout_s=REAL_TIMEOUT_S, retries=0)
    try:
        return fuzz(
            client, device.exchanges, tcp_oracle, random.Random(seed + 1), cases,
            transport="TCP over 127.0.0.1", after_each=client.close,
        )  # fmt: skip
    finally:
        client.close()
        device.close()


def fuzz_rtu_serial(pair: tuple[str, str], wire, seed: int, cases: int) -> Counter[str]:
    device_end, master_end = pair
    rng = random.Random(seed)

    def respond(request: bytes) -> bytes:
        answer = _fit_to_declared_length(_mutate(wire.rtu_answer(request), rng, 1), rng)
        if len(answer) > 3 and rng.random() < 0.5:  # a good CRC over a bad frame
            answer = answer[:-2] + wire.crc(answer[:-2])
        return answer

    def oracle(request: bytes, answer: bytes) -> Outcome:
        return rtu_oracle(request, answer, wire.crc)

    device = _MutatingSerialDevice(device_end, respond)
    line = RtuLine(master_end, 115200, timeout_s=REAL_TIMEOUT_S)
    client = line.client(RTU_UNIT, retries=0, backoff_s=0)
    try:
        return fuzz(
            client, device.exchanges, oracle, random.Random(seed + 1), cases,
            transport="RTU over a socat pty pair",
        )  # fmt: skip
    finally:
        line.close()
        device.close()


# ---------------------------------------------------------------------------- the fuzz


def _check_spread(outcomes: Counter[str], cases: int) -> None:
    """Most answers are garbled, and every kind of outcome occurs."""
    assert outcomes["invalid"] >= 0.75 * cases, outcomes
    assert outcomes["values"], outcomes
    assert outcomes["exception"], outcomes
    assert outcomes["ok"], outcomes


@pytest.mark.timeout(120)
def test_fuzzed_tcp_answers_in_memory(tcp_fake, wire):
    outcomes = fuzz_tcp_in_memory(tcp_fake, wire, SEED, IN_MEMORY_CASES)
    print(f"\nTCP in memory: {dict(outcomes)}")
    _check_spread(outcomes, IN_MEMORY_CASES)


@pytest.mark.timeout(120)
def test_fuzzed_rtu_answers_in_memory(rtu_fake, wire):
    outcomes = fuzz_rtu_in_memory(rtu_fake, wire, SEED + 1, IN_MEMORY_CASES)
    print(f"\nRTU in memory: {dict(outcomes)}")
    _check_spread(outcomes, IN_MEMORY_CASES)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fuzzed_answers_over_loopback_tcp(no_leaks, wire):
    outcomes = fuzz_tcp_loopback(wire, SEED + 2, LOOPBACK_CASES)
    print(f"\nTCP over 127.0.0.1: {dict(outcomes)}")
    _check_spread(outcomes, LOOPBACK_CASES)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fuzzed_answers_over_a_serial_pair(no_leaks, serial_pair, wire):
    outcomes = fuzz_rtu_serial(serial_pair, wire, SEED + 3, SERIAL_CASES)
    print(f"\nRTU over socat: {dict(outcomes)}")
    _check_spread(outcomes, SERIAL_CASES)


# ---------------------------------------------------------------------------- it can fail


def _inject_parser_bug(monkeypatch) -> list[bytes]:
    """Make ``frames.parse_read_response`` divide by zero on an odd byte count.

    An odd byte count is never well formed (the oracle says "invalid"), which is where a
    client that turned every exception into "invalid frame" hid such a bug. Returns the list
    of PDUs the bug fired on.
    """
    real = frames.parse_read_response
    fired: list[bytes] = []

    def buggy(pdu: bytes, function: int, count: int) -> list[int]:
        if len(pdu) > 1 and pdu[0] == function:
            if pdu[1] % 2:
                fired.append(pdu)
            _ = len(pdu) // (1 - pdu[1] % 2)  # the bug: an odd byte count divides by zero
        return real(pdu, function, count)

    monkeypatch.setattr(frames, "parse_read_response", buggy)
    return fired


TRANSPORTS = ["tcp in memory", "rtu in memory", "tcp loopback", "rtu serial"]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_harness_reports_an_injected_parser_bug(
    monkeypatch, request, tcp_fake, rtu_fake, wire, transport
):
    fired = _inject_parser_bug(monkeypatch)
    run = {  # the same runs as the fuzz tests above (the bug fires within a few hundred)
        "tcp in memory": lambda: fuzz_tcp_in_memory(tcp_fake, wire, SEED, IN_MEMORY_CASES),
        "rtu in memory": lambda: fuzz_rtu_in_memory(rtu_fake, wire, SEED + 1, IN_MEMORY_CASES),
        "tcp loopback": lambda: fuzz_tcp_loopback(wire, SEED + 2, LOOPBACK_CASES),
        "rtu serial": lambda: fuzz_rtu_serial(
            request.getfixturevalue("serial_pair"), wire, SEED + 3, SERIAL_CASES
        ),
    }[transport]
    with pytest.raises(FuzzFailure) as info:
        run()
    failure = info.value
    assert isinstance(failure.error, ZeroDivisionError)
    assert failure.got is None
    assert "ZeroDivisionError escaped the client" in str(failure)
    assert len(fired) == 1  # reported at the first case it fired on, not later
    assert fired[0] in failure.answer  # the failing case is the one it fired on
    assert failure.expected == ("invalid",)  # an outcome check alone would have passed it


def test_the_harness_reports_a_wrong_value(monkeypatch, tcp_fake, wire):
    """A bug that raises nothing but returns registers in the wrong order is a mismatch."""
    real = frames.parse_read_response

    def swapped(pdu: bytes, function: int, count: int) -> list[int]:
        return real(pdu, function, count)[::-1]

    monkeypatch.setattr(frames, "parse_read_response", swapped)
    with pytest.raises(FuzzFailure) as info:
        fuzz_tcp_in_memory(tcp_fake, wire, SEED, IN_MEMORY_CASES)
    failure = info.value
    assert failure.error is None
    assert failure.expected is not None
    assert failure.expected[0] == "values"
    assert failure.got == ("values", failure.expected[1][::-1])


# ---------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionResetError("reset by peer"), DeviceUnavailable),
        (TimeoutError("timed out"), DeviceUnavailable),
        (
            serial.SerialException("device reports readiness to read but returned no data"),
            DeviceUnavailable,
        ),
        (tk_errors.ModbusInvalidResponseError("Invalid CRC in response"), InvalidFrame),
        (modbus_tcp.ModbusInvalidMbapError("Invalid transaction id"), InvalidFrame),
        (struct.error("unpack requires a buffer of 2 bytes"), InvalidFrame),
        (tk_errors.ModbusInvalidRequestError("Request length is invalid"), DeviceUnavailable),
        (ZeroDivisionError("integer division or modulo by zero"), ZeroDivisionError),
        (KeyError("fc"), KeyError),
        (RuntimeError("a library bug"), RuntimeError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_the_client_maps_wire_errors_and_lets_bugs_escape(tcp_fake, raised, expected):
    def respond(request: bytes) -> bytes:
        raise raised

    client, sock = tcp_fake(respond, retries=1)
    with pytest.raises(expected) as info:
        client.read_registers("holding", 0, 2)
    assert len(sock.requests) == (2 if issubclass(expected, DeviceUnavailable) else 1)
    if issubclass(expected, DeviceUnavailable):
        assert info.value.__cause__ is raised  # retried, then reported with its cause
    else:
        assert info.value is raised  # escaped unchanged, at the first attempt
    assert sock.closed  # either way the connection is dropped before the next request


def test_an_exception_from_the_library_is_a_device_error(tcp_fake):
    def respond(request: bytes) -> bytes:
        raise tk_errors.ModbusError(4)

    client, _ = tcp_fake(respond)
    with pytest.raises(DeviceError) as info:
        client.read_registers("holding", 0, 2)
    assert info.value.code == 4


# ---------------------------------------------------------------------------- the boundary

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
H = timedelta(hours=1)


def _input_register_bug(monkeypatch) -> None:
    """Reads of input registers (function 4) divide by zero; holding registers are fine."""
    real = frames.parse_read_response

    def buggy(pdu: bytes, function: int, count: int) -> list[int]:
        _ = count // (function - 4) if function == 4 else 0
        return real(pdu, function, count)

    monkeypatch.setattr(frames, "parse_read_response", buggy)


def _errors_logged(caplog, logger: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == logger and r.levelno == logging.ERROR and r.exc_info is not None
    ]


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_parser_bug_is_a_named_missing_reading_and_the_others_go_on(
    no_leaks, monkeypatch, caplog
):
    meter = LoadMeterSim(constant_profile(1500), start_at=T0)  # sdm630: input registers
    battery = BatterySim(10_000, 5000, soc0=50, start_at=T0)  # holding registers
    with meter, battery:
        meter.advance(T0 + H)
        battery.advance(T0 + H)
        clients = [
            ModbusTkClient("127.0.0.1", sim.port, 1, timeout_s=REAL_TIMEOUT_S, retries=0)
            for sim in (meter, battery)
        ]
        readers = {
            DeviceId(name): DeviceReader(
                DeviceId(name), ParticipantId("p"), BusId("b"), client, load_register_map(m)
            )
            for (name, m), client in zip(
                [("meter", "sdm630"), ("bat", "battery")], clients, strict=True
            )
        }
        try:
            _input_register_bug(monkeypatch)
            with caplog.at_level(logging.ERROR, logger="adapters.modbus"):
                readings = poll_all(readers, T0 + H)
            meter_reading = readings[DeviceId("meter")]
            assert meter_reading.quality is ReadingQuality.MISSING
            assert "ZeroDivisionError: integer division or modulo by zero" in meter_reading.reason
            assert readings[DeviceId("bat")].quality is ReadingQuality.OK
            (logged,) = _errors_logged(caplog, "adapters.modbus.reading")
            assert logged.exc_info is not None
            assert logged.exc_info[0] is ZeroDivisionError
            assert "meter" in logged.getMessage()
            monkeypatch.undo()  # the bug fixed: the connection the bug left is usable again
            readings = poll_all(readers, T0 + 2 * H)
            assert readings[DeviceId("meter")].quality is ReadingQuality.OK
            assert readings[DeviceId("meter")].p_w == 1500
        finally:
            for client in clients:
                client.close()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_bug_in_discovery_is_named_by_the_poller(no_leaks, monkeypatch, caplog):
    """A DiscoveringReader does not catch it: the poller is the boundary."""
    pv = PVInverterSim(5000, constant_profile(3000), start_at=T0)
    with pv, ModbusTkClient("127.0.0.1", pv.port, 1, timeout_s=REAL_TIMEOUT_S, retries=0) as c:
        real = frames.parse_read_response

        def buggy(pdu: bytes, function: int, count: int) -> list[int]:
            return real(pdu, function, count // 0)

        monkeypatch.setattr(frames, "parse_read_response", buggy)
        reader = DiscoveringReader(
            DeviceId("pv"), ParticipantId("p"), BusId("b"), DiscoveredMap(c, "pv")
        )
        with caplog.at_level(logging.ERROR, logger="adapters.modbus"):
            reading = poll_all({DeviceId("pv"): reader}, T0)[DeviceId("pv")]
    assert reading.quality is ReadingQuality.MISSING
    assert reading.reason.startswith("reader failed: ZeroDivisionError:"), reading.reason
    (logged,) = _errors_logged(caplog, "adapters.modbus.polling")
    assert logged.exc_info is not None
    assert logged.exc_info[0] is ZeroDivisionError


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_bug_in_a_write_is_a_named_failed_write(no_leaks, monkeypatch, caplog):
    battery = BatterySim(10_000, 5000, soc0=50, start_at=T0)
    with (
        battery,
        ModbusTkClient("127.0.0.1", battery.port, 1, timeout_s=REAL_TIMEOUT_S, retries=0) as c,
    ):
        real = frames.parse_write_response

        def buggy(pdu: bytes, address: int, count: int) -> None:
            real(pdu, address, count // 0)

        monkeypatch.setattr(frames, "parse_write_response", buggy)
        writer = DeviceWriter(DeviceId("bat"), c, load_register_map("battery"))
        setpoint = Setpoint(
            device_id=DeviceId("bat"), interval=Interval(T0), kind=SetpointKind.BATTERY, p_w=1000
        )
        with caplog.at_level(logging.ERROR, logger="adapters.modbus"):
            result = writer.write(setpoint)
    assert not result.ok
    assert "ZeroDivisionError: integer division or modulo by zero" in result.reason
    (logged,) = _errors_logged(caplog, "adapters.modbus.writing")
    assert logged.exc_info is not None
    assert logged.exc_info[0] is ZeroDivisionError
