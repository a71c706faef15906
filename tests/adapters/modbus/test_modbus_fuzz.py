"""Fuzz: mutated answers through the whole client path (modbus_tk MAC layer, framing, PDU
checks, retries), TCP and RTU. Zero crashes, and zero values taken from invalid frames.

The oracle below is an independent statement of what a well-formed answer is: when it says
"invalid", the client must raise DeviceUnavailable; when it says "values", the client must
return exactly the registers in the frame (a flipped data bit is a well-formed frame that no
protocol can tell from the truth); "exception" must be a DeviceError with that code.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections import Counter

import pytest

from adapters.modbus.client import ModbusTkClient
from adapters.modbus.errors import DeviceError, DeviceUnavailable

SEED = 20260621
CASES_PER_TRANSPORT = 10_000


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


def _request(rng: random.Random):
    if rng.random() < 0.8:
        count = rng.choice((1, 2, rng.randrange(1, 126)))
        return ("read", rng.choice(("holding", "input")), rng.randrange(0, 65536 - count), count)
    count = rng.randrange(1, 20)
    return ("write", "holding", rng.randrange(0, 65536 - count), count)


def _run(client, op, table, address, count):
    try:
        if op == "read":
            return ("values", client.read_registers(table, address, count))
        client.write_registers(address, list(range(count)))
    except DeviceError as exc:
        return ("exception", exc.code)
    except DeviceUnavailable:
        return ("invalid",)
    return ("ok",)


def _pdu_outcome(pdu: bytes, request_pdu: bytes):
    function = request_pdu[0]
    if len(pdu) == 2 and pdu[0] == function | 0x80:
        return ("exception", pdu[1])
    if function == 16:
        return ("ok",) if pdu == request_pdu[:5] else ("invalid",)
    count = struct.unpack(">H", request_pdu[3:5])[0]
    if len(pdu) == 2 + 2 * count and pdu[0] == function and pdu[1] == 2 * count:
        return ("values", list(struct.unpack(f">{count}H", pdu[2:])))
    return ("invalid",)


def tcp_oracle(request: bytes, answer: bytes):
    if len(answer) < 6:
        return ("invalid",)
    _, protocol, length = struct.unpack(">HHH", answer[:6])
    if protocol != 0 or not 2 <= length <= 254 or len(answer) < 6 + length:
        return ("invalid",)
    frame = answer[: 6 + length]  # the rest belongs to the stream after it
    if frame[:2] != request[:2] or frame[6] != request[6]:
        return ("invalid",)
    return _pdu_outcome(frame[7:], request[7:])


def rtu_oracle(request: bytes, answer: bytes, crc):
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


@pytest.mark.timeout(60)
def test_fuzzed_tcp_answers(tcp_fake, wire):
    rng = random.Random(SEED)
    client, sock = tcp_fake(lambda request: _mutate(wire.tcp_answer(request), rng, 7))
    outcomes = Counter()
    for _ in range(CASES_PER_TRANSPORT):
        op, table, address, count = _request(rng)
        got = _run(client, op, table, address, count)
        expected = tcp_oracle(sock.requests[-1], sock.responses[-1])
        assert got == expected, (sock.requests[-1].hex(), sock.responses[-1].hex())
        outcomes[got[0]] += 1
    print(f"\nTCP fuzz: {dict(outcomes)}")
    assert outcomes["invalid"] >= 8000
    assert outcomes["values"]
    assert outcomes["exception"]


@pytest.mark.timeout(60)
def test_fuzzed_rtu_answers(rtu_fake, wire):
    rng = random.Random(SEED + 1)

    def respond(request):
        mutated = _mutate(wire.rtu_answer(request), rng, 1)
        if len(mutated) > 2 and rng.random() < 0.5:  # a good CRC over a bad frame
            mutated = mutated[:-2] + wire.crc(mutated[:-2])
        return mutated

    client, port = rtu_fake(respond, unit=17)
    outcomes = Counter()
    for _ in range(CASES_PER_TRANSPORT):
        op, table, address, count = _request(rng)
        got = _run(client, op, table, address, count)
        expected = rtu_oracle(port.requests[-1], port.responses[-1], wire.crc)
        assert got == expected, (port.requests[-1].hex(), port.responses[-1].hex())
        outcomes[got[0]] += 1
    print(f"\nRTU fuzz: {dict(outcomes)}")
    assert outcomes["invalid"] >= 8000
    assert outcomes["values"]
    assert outcomes["exception"]


class _MutatingServer:
    """A TCP 'device' that answers each request with a mutated frame, then hangs up."""

    def __init__(self, rng, tcp_answer):
        self.rng = rng
        self.tcp_answer = tcp_answer
        self.exchanges = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(512)
                if not request:
                    continue
                answer = _mutate(self.tcp_answer(request), self.rng, 7)
                self.exchanges.append((request, answer))
                conn.sendall(answer)

    def close(self):
        self.stopping.set()
        self.thread.join(2)
        self.listener.close()


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_fuzzed_answers_over_a_real_socket(no_leaks, wire):
    server = _MutatingServer(random.Random(SEED + 2), wire.tcp_answer)
    client = ModbusTkClient("127.0.0.1", server.port, 1, timeout_s=0.5, retries=0)
    rng = random.Random(SEED + 3)
    outcomes = Counter()
    try:
        for _ in range(300):
            op, table, address, count = _request(rng)
            got = _run(client, op, table, address, count)
            request, answer = server.exchanges[-1]
            assert got == tcp_oracle(request, answer), (request.hex(), answer.hex())
            outcomes[got[0]] += 1
            client.close()  # the server hangs up after each answer
    finally:
        client.close()
        server.close()
    assert outcomes["invalid"] >= 200
