"""Frames: PDUs with literal byte vectors, then the client over in-memory TCP and RTU wires
(no network): exception answers, bad CRC, wrong ids, cut frames, retries and reconnects."""

from __future__ import annotations

import struct

import pytest

from adapters.modbus import frames
from adapters.modbus.errors import DeviceError, DeviceUnavailable, InvalidFrame, WriteRefused

# ---------------------------------------------------------------------------- pure PDUs


def test_requests_as_literal_bytes():
    assert frames.read_request(3, 40000, 2) == bytes.fromhex("039c400002")
    assert frames.read_request(4, 0x34, 2) == bytes.fromhex("0400340002")
    assert frames.write_request(40155, [10000, 1]) == bytes.fromhex("109cdb00020427100001")
    with pytest.raises(ValueError, match="not a register read"):
        frames.read_request(16, 0, 1)
    with pytest.raises(ValueError, match="cannot read 126"):
        frames.read_request(3, 0, 126)
    with pytest.raises(ValueError, match="cannot read 2 registers at 65535"):
        frames.read_request(3, 65535, 2)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        frames.write_request(0, [70000])
    with pytest.raises(ValueError, match="cannot write 124"):
        frames.write_request(0, [0] * 124)


def test_read_answers_are_checked_strictly():
    assert frames.parse_read_response(bytes.fromhex("030453756e53"), 3, 2) == [0x5375, 0x6E53]
    bad = {
        "040453756e53": "function code 4 \\(expected 3\\)",  # another function's answer
        "030353756e": "byte count 3",  # odd byte count
        "030453756e": "byte count 4 and 3 data bytes",  # cut
        "030453756e5300": "5 data bytes",  # one byte too many
        "0302": "byte count 2 and 0 data bytes",
        "03": "byte count None",
        "": "empty answer",
        "8302aa": "exception answer of 3 bytes",
    }
    for hexed, message in bad.items():
        with pytest.raises(InvalidFrame, match=message):
            frames.parse_read_response(bytes.fromhex(hexed), 3, 2)
    with pytest.raises(DeviceError) as info:
        frames.parse_read_response(bytes.fromhex("8302"), 3, 2)
    assert info.value.code == 2
    assert "illegal data address" in str(info.value)
    with pytest.raises(InvalidFrame, match="function code 129"):  # 0x81 answers function 1
        frames.parse_read_response(bytes.fromhex("8102"), 3, 2)


def test_write_answers_must_echo_address_and_count():
    frames.parse_write_response(bytes.fromhex("109cdb0002"), 40155, 2)
    for hexed in ("109cdb0001", "109cdc0002", "109cdb000200", "069cdb0002"):
        with pytest.raises(InvalidFrame):
            frames.parse_write_response(bytes.fromhex(hexed), 40155, 2)
    with pytest.raises(DeviceError) as info:
        frames.parse_write_response(bytes.fromhex("9002"), 40155, 2)
    assert info.value.code == 2


def test_frame_lengths():
    assert frames.tcp_length(bytes.fromhex("000100000007")) == 7
    for hexed, message in {
        "000100010007": "protocol id 1",
        "000100000001": "length 1 outside",
        "0001000000ff": "length 255 outside",
        "00010000": "needs 6 bytes",
    }.items():
        with pytest.raises(InvalidFrame, match=message):
            frames.tcp_length(bytes.fromhex(hexed))
    assert frames.rtu_frame_length(bytes.fromhex("010304")) == 9
    assert frames.rtu_frame_length(bytes.fromhex("018302")) == 5
    assert frames.rtu_frame_length(bytes.fromhex("01109c")) == 8
    with pytest.raises(InvalidFrame, match="function code 43"):
        frames.rtu_frame_length(bytes.fromhex("012b0e"))
    with pytest.raises(InvalidFrame, match="needs 3 bytes"):
        frames.rtu_frame_length(b"\x01\x03")


def test_the_crc_of_the_tests_is_the_modbus_crc(wire):
    # Modbus over serial line spec, example: read 10 holding registers of unit 1 -> CRC C5 CD.
    assert wire.crc(bytes.fromhex("01030000000a")) == bytes.fromhex("c5cd")


# ---------------------------------------------------------------------------- TCP, in memory


def test_tcp_read_and_write_on_a_good_wire(tcp_fake, wire):
    client, sock = tcp_fake(wire.tcp_answer)
    assert client.read_registers("holding", 40000, 3) == wire.registers_at(40000, 3)
    assert client.read_registers("input", 52, 2) == wire.registers_at(52, 2)
    client.write_registers(40155, [10000, 1])
    requests = sock.requests
    assert [r[7] for r in requests] == [3, 4, 16]
    assert requests[2][7:] == bytes.fromhex("109cdb00020427100001")
    assert len({r[:2] for r in requests}) == 3  # a new transaction id each time


def test_tcp_answer_read_in_two_calls_not_one_per_byte(tcp_fake, wire):
    calls = []
    client, sock = tcp_fake(wire.tcp_answer)
    real_recv = sock.recv

    def counting_recv(n):
        calls.append(n)
        return real_recv(n)

    sock.recv = counting_recv
    client.read_registers("holding", 0, 100)
    assert calls == [6, 203]  # the header, then unit id + function + count + 200 bytes


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a[:2] + b"\x00\x01" + a[4:], "protocol id 1"),
        (lambda a: bytes([a[0] ^ 0xFF]) + a[1:], "Invalid transaction id"),
        (lambda a: a[:6] + bytes([a[6] ^ 0x01]) + a[7:], "Invalid unit id"),
        (lambda a: a[:-1], "cut after"),
        (lambda a: a[:4] + struct.pack(">H", 300) + a[6:], "length 300 outside"),
        (lambda a: a[:7] + b"\x04" + a[8:], "function code 4"),
        (lambda a: a[:8] + bytes([a[8] + 2]) + a[9:], "byte count 8"),
        (lambda _a: b"", "closed the connection"),
    ],
)
def test_tcp_garbled_answers_are_invalid_frames_and_never_values(tcp_fake, wire, mutate, message):
    client, sock = tcp_fake(lambda request: mutate(wire.tcp_answer(request)))
    with pytest.raises(DeviceUnavailable, match=message) as info:
        client.read_registers("holding", 40000, 3)
    assert isinstance(info.value, ConnectionError)
    assert sock.closed  # the stream may be out of step: reconnect next time


def test_tcp_exception_answer_is_a_device_error_with_its_code(tcp_fake, wire):
    client, _ = tcp_fake(lambda request: wire.tcp_answer(request, bytes([0x83, 0x02])))
    with pytest.raises(DeviceError) as info:
        client.read_registers("holding", 40000, 3)
    assert info.value.code == 2
    assert "read holding 40000+3 from fake:502/1" in str(info.value)


def test_tcp_busy_device_is_retried_then_answers(tcp_fake, wire):
    answers = iter([bytes([0x83, 0x06]), bytes([0x83, 0x05]), None])
    client, sock = tcp_fake(lambda r: wire.tcp_answer(r, next(answers)), retries=2)
    assert client.read_registers("holding", 10, 2) == wire.registers_at(10, 2)
    assert len(sock.requests) == 3


def test_tcp_garbage_then_good_answer_recovers_on_retry(tcp_fake, wire):
    answers = iter([lambda a: a[:5], lambda a: a])
    client, sock = tcp_fake(lambda r: next(answers)(wire.tcp_answer(r)), retries=1)
    assert client.read_registers("holding", 10, 2) == wire.registers_at(10, 2)
    assert sock.closed == 1


def test_write_echo_mismatch_is_not_a_success(tcp_fake, wire):
    client, _ = tcp_fake(lambda r: wire.tcp_answer(r, bytes.fromhex("109cdb0001")))
    with pytest.raises(InvalidFrame, match="device answered"):
        client.write_registers(40155, [1, 2])
    with pytest.raises(WriteRefused):
        client.write_registers(40155, [70000])


# ---------------------------------------------------------------------------- RTU, in memory


def test_rtu_read_and_write_on_a_good_line(rtu_fake, wire):
    client, port = rtu_fake(wire.rtu_answer, unit=7)
    assert client.read_registers("holding", 40000, 4) == wire.registers_at(40000, 4)
    client.write_registers(100, [1, 2, 3])
    first = port.requests[0]
    assert first[:-2] == bytes.fromhex("07039c400004")
    assert first[-2:] == wire.crc(first[:-2])
    assert client.endpoint == "rtu:fake-serial@19200/7"


def test_rtu_bad_crc_is_an_invalid_frame(rtu_fake, wire):
    def flipped(request):
        answer = bytearray(wire.rtu_answer(request))
        answer[4] ^= 0x10
        return bytes(answer)

    client, _ = rtu_fake(flipped)
    with pytest.raises(InvalidFrame, match="Invalid CRC"):
        client.read_registers("holding", 40000, 2)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda r: b"", "timed out"),
        (lambda r: r[:1] + b"\x03", "cut after 2 bytes"),
        (lambda r: b"\x09" + r[1:], "Response address 9"),
        (lambda r: r[:1] + b"\x2b\x0e\x01\x02", "function code 43"),
    ],
)
def test_rtu_silence_and_garbage(rtu_fake, wire, answer, message):
    def respond(request):
        good = wire.rtu_answer(request)
        return answer(good)

    client, _ = rtu_fake(respond)
    with pytest.raises(DeviceUnavailable, match=message):
        client.read_registers("holding", 40000, 2)


def test_rtu_exception_answer_takes_five_bytes_not_a_timeout(rtu_fake, wire):
    client, port = rtu_fake(lambda r: wire.rtu_answer(r, bytes([0x84, 0x02])))
    with pytest.raises(DeviceError) as info:
        client.read_registers("input", 0, 10)
    assert info.value.code == 2
    assert port.buffer == b""  # read exactly the 5 bytes


def test_rtu_pdu_checks_apply_under_a_good_crc(rtu_fake, wire):
    # A frame with a valid CRC that answers another question: still no values.
    client, _ = rtu_fake(lambda r: wire.rtu_answer(r, bytes.fromhex("0304aaaabbbb")))
    with pytest.raises(InvalidFrame, match="byte count 4"):
        client.read_registers("holding", 0, 3)


def test_clients_on_one_line_share_it_and_the_line_stays_open(wire):
    from adapters.modbus.client import RtuLine

    port = _serial_stub(wire)
    line = RtuLine(port, timeout_s=0.1)
    a, b = line.client(1), line.client(2)
    assert a.read_registers("holding", 0, 1) == wire.registers_at(0, 1)
    assert b.read_registers("holding", 5, 1) == wire.registers_at(5, 1)
    assert [r[0] for r in port.requests] == [1, 2]
    a.close()
    assert port.is_open
    line.close()
    assert not port.is_open


def _serial_stub(wire):
    class Port:
        def __init__(self):
            self.timeout = 0.1
            self.inter_byte_timeout = None
            self.baudrate = 9600
            self.name = self.port = "stub"
            self.is_open = False
            self.buffer = b""
            self.requests = []

        def open(self):
            self.is_open = True

        def close(self):
            self.is_open = False

        def write(self, data):
            self.requests.append(bytes(data))
            self.buffer += wire.rtu_answer(bytes(data))

        def read(self, n):
            chunk, self.buffer = self.buffer[:n], self.buffer[n:]
            return chunk

        def flush(self):
            pass

        def reset_input_buffer(self):
            self.buffer = b""

        def reset_output_buffer(self):
            pass

    return Port()


def test_rtu_unit_ids_are_checked():
    from adapters.modbus.client import ModbusTkClient

    with pytest.raises(ValueError, match=r"1\.\.247"):
        ModbusTkClient.rtu("/dev/null", 0)
    with pytest.raises(ValueError, match=r"1\.\.247"):
        ModbusTkClient.rtu("/dev/null", 248)


def test_a_late_rtu_answer_is_drained_not_taken_for_the_next_one(rtu_fake, wire):
    """RTU has no transaction id: the answer to a timed-out read of 40000 must not become the
    answer to the next read of 40100 (same unit, function and count)."""
    late = []

    def respond(request):
        if not late:  # the first request: the device answers too late
            late.append(wire.rtu_answer(request))
            return b""
        return wire.rtu_answer(request)

    client, port = rtu_fake(respond, retries=0)
    real_read = port.read
    reads = []

    def read(n):
        reads.append(n)
        if len(reads) == 2:  # after the master gave up: it arrives now
            port.buffer = late[0] + port.buffer
        return real_read(n)

    port.read = read
    with pytest.raises(DeviceUnavailable, match="timed out"):
        client.read_registers("holding", 40000, 2)
    assert client.read_registers("holding", 40100, 2) == wire.registers_at(40100, 2)
