"""``peergrid devices read|simulate`` through controller.cli_devices.register, on a parser
built here (the lead wires it into controller/cli.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.modbus.simulators import BatterySim, LoadMeterSim, PVInverterSim, constant_profile
from controller import cli_devices

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def run(argv):
    parser = argparse.ArgumentParser(prog="peergrid")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_devices.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def read_json(capsys, argv):
    code = run(["devices", "read", *argv, "--json"])
    lines = capsys.readouterr().out.splitlines()  # a simulator thread may print too
    if "{" not in lines:
        return code, None
    return code, json.loads("\n".join(lines[lines.index("{") : lines.index("}") + 1]))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SIMS = {
    "pv": lambda t0: PVInverterSim(5000, constant_profile(3500), start_at=t0),
    "pv700": lambda t0: PVInverterSim(5000, constant_profile(2500), start_at=t0,
                                      register_map="sunspec_der_inverter"),
    "meter": lambda t0: LoadMeterSim(constant_profile(1500), start_at=t0),
    "sunspec meter": lambda t0: LoadMeterSim(constant_profile(-900), start_at=t0,
                                             register_map="sunspec_meter"),
    "battery": lambda t0: BatterySim(10_000, 5000, 64, start_at=t0),
    "storage": lambda t0: BatterySim(10_000, 5000, 64, start_at=t0,
                                     register_map="sunspec_der_storage"),
}  # fmt: skip
EXPECTED = {  # p_w in the GRID sign, soc
    "pv": (-3500, None),
    "pv700": (-2500, None),
    "meter": (1500, None),
    "sunspec meter": (-900, None),
    "battery": (0, 64.0),
    "storage": (0, 64.0),
}


@pytest.mark.parametrize("kind", list(SIMS))
def test_read_every_kind_over_tcp(no_leaks, capsys, kind):
    now = datetime.now(UTC)
    with SIMS[kind](now) as sim:
        sim.advance(now + timedelta(seconds=1))
        map_name = "sunspec" if sim.register_map.name.startswith("sunspec") else (
            sim.register_map.name)  # fmt: skip
        code, report = read_json(capsys, ["--port", str(sim.port), "--map", map_name])
    assert code == 0
    reading = report["reading"]
    assert reading["quality"] == "ok"
    assert (reading["p_w"], reading["soc_percent"]) == EXPECTED[kind]
    if map_name == "sunspec":
        models = report["sunspec"]["models"]
        assert models[0]["id"] == 1
        assert models[0]["points"]["Mn"] == {"value": "PeerGrid"}
        assert report["sunspec"]["base_address"] == 40000
        assert "fields" not in report
    else:
        assert report["fields"]


def test_sunspec_points_are_decoded_in_the_output(no_leaks, capsys):
    now = datetime.now(UTC)
    with PVInverterSim(5000, constant_profile(3500), start_at=now) as pv:
        code, report = read_json(capsys, ["--port", str(pv.port)])
        assert run(["devices", "read", "--port", str(pv.port)]) == 0
        text = capsys.readouterr().out
    assert code == 0
    inverter = report["sunspec"]["models"][1]
    assert (inverter["id"], inverter["name"], inverter["address"]) == (
        103, "inverter_three_phase", 40070)  # fmt: skip
    assert inverter["points"]["W"] == {"value": 3500, "units": "W"}
    assert inverter["points"]["A"] == {"value": None, "units": "A"}  # not implemented
    nameplate = report["sunspec"]["models"][2]["points"]
    assert nameplate["WRtg"]["value"] == 5000
    assert "model 103 inverter_three_phase" in text
    assert "p_w -3500 W" in text


def test_read_failures_and_bad_input(no_leaks, capsys, tmp_path):
    dead = free_port()
    assert run(["devices", "read", "--port", str(dead), "--timeout", "0.2"]) == 1
    assert "connection refused" in capsys.readouterr().err
    with LoadMeterSim(constant_profile(100)) as meter:
        assert run(["devices", "read", "--port", str(meter.port)]) == 1  # an SDM630: no SunS
        assert "no SunSpec marker" in capsys.readouterr().err
        assert run(["devices", "read", "--port", str(meter.port), "--map", "nope"]) == 2
        no_power = tmp_path / "no_power.json"
        no_power.write_text(json.dumps({"name": "np", "fields": [
            {"name": "V", "address": 0, "kind": "float32", "table": "input"}]}))  # fmt: skip
        assert run(["devices", "read", "--port", str(meter.port), "--map", str(no_power)]) == 2
        assert "has no field for p_w" in capsys.readouterr().err
        with pytest.raises(SystemExit) as refused:  # argparse: unit ids are 1..247
            run(["devices", "read", "--port", str(meter.port), "--unit", "300"])
        assert refused.value.code == 2
        meter.set_fault("exception")
        code, report = read_json(capsys, ["--port", str(meter.port), "--map", "sdm630"])
        assert code == 1
        assert report["reading"]["quality"] == "missing"
        assert "Modbus exception code 4" in report["reading"]["reason"]
    with pytest.raises(SystemExit):
        run(["devices", "simulate", "toaster", "--port", "0"])


def _simulate_in_thread(argv):
    result = {}

    def target():
        result["code"] = run(["devices", "simulate", *argv])

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def _wait_for_port(port):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(port)


def test_simulate_serves_until_its_duration(no_leaks, capsys):
    port = free_port()
    thread, result = _simulate_in_thread(
        [
            "pv",
            "--port",
            str(port),
            "--power-w",
            "2000",
            "--rated-w",
            "4000",
            "--duration",
            "1.5",
            "--speed",
            "3600",
        ]
    )
    _wait_for_port(port)
    time.sleep(0.3)
    assert "serving pv (sunspec_inverter) unit 1 on tcp 127.0.0.1" in capsys.readouterr().out
    code, report = read_json(capsys, ["--port", str(port)])
    thread.join(10)
    assert code == 0
    assert report["reading"]["p_w"] == -2000
    assert report["reading"]["export_wh_total"] > 0  # an hour per second: energy counts
    assert report["sunspec"]["models"][2]["points"]["WRtg"]["value"] == 4000
    assert result["code"] == 0
    assert capsys.readouterr().out == "stopped\n"


def test_simulate_bad_input_and_busy_port(no_leaks, capsys):
    assert run(["devices", "simulate", "meter"]) == 2
    assert "give --port" in capsys.readouterr().err
    assert run(["devices", "simulate", "meter", "--port", "0", "--map", "nope"]) == 2
    assert run(["devices", "simulate", "meter", "--port", "0", "--speed", "0"]) == 2
    with LoadMeterSim(constant_profile(1)) as busy:
        assert run(["devices", "simulate", "meter", "--port", str(busy.port),
                    "--duration", "0"]) == 1  # fmt: skip
        assert "cannot serve meter" in capsys.readouterr().err


def test_simulate_and_read_over_rtu(no_leaks, capsys, tmp_path):
    socat = shutil.which("socat")
    assert socat
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(  # noqa: S603 - fixed arguments
        [socat, f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while not (a.exists() and b.exists()) and time.monotonic() < deadline:
            time.sleep(0.01)
        thread, result = _simulate_in_thread(
            [
                "battery",
                "--rtu",
                str(a),
                "--baud",
                "115200",
                "--unit",
                "3",
                "--soc",
                "30",
                "--map",
                "sunspec_storage",
                "--duration",
                "1.5",
            ]
        )
        time.sleep(0.4)
        code, report = read_json(capsys, ["--rtu", str(b), "--baud", "115200", "--unit", "3"])
        thread.join(10)
    finally:
        proc.terminate()
        proc.wait(5)
    assert code == 0
    assert report["reading"]["soc_percent"] == pytest.approx(30.0)
    assert [m["id"] for m in report["sunspec"]["models"]] == [1, 103, 120, 124]
    assert report["endpoint"] == f"rtu:{b}@115200/3"
    assert result["code"] == 0


def test_simulate_signs_with_a_device_key_file(no_leaks, capsys, tmp_path, monkeypatch):
    """A gateway joining: a key made by 'devices keys new', served by 'devices simulate'."""
    from adapters.modbus.client import ModbusTkClient
    from adapters.modbus.mapfiles import load_register_map
    from adapters.modbus.reading import DeviceReader
    from market.domain import BusId, DeviceId, ParticipantId
    from market.signed_readings import check_reading

    monkeypatch.setenv("PEERGRID_KEYSTORE_PASSWORD", "gateway-test")
    key_file = tmp_path / "gw.pem"
    assert run(["devices", "keys", "new", "--out", str(key_file), "--json"]) == 0
    public = bytes.fromhex(json.loads(capsys.readouterr().out)["public_key"])
    port = free_port()
    thread, result = _simulate_in_thread(
        ["meter", "--port", str(port), "--power-w", "1200", "--duration", "1.5",
         "--device-id", "gw-meter", "--signing-key", str(key_file)]
    )  # fmt: skip
    _wait_for_port(port)
    time.sleep(0.4)
    served = capsys.readouterr().out
    assert f"signs as gw-meter (block at input register 28672, public key {public.hex()})" in served
    client = ModbusTkClient("127.0.0.1", port, 1, timeout_s=0.5, retries=1, backoff_s=0.01)
    try:
        reader = DeviceReader(
            DeviceId("gw-meter"), ParticipantId("p"), BusId("b"), client,
            load_register_map("sdm630"), signed_block=0x7000,
        )  # fmt: skip
        now = datetime.now(UTC)
        reading = reader.read(now)
    finally:
        client.close()
    thread.join(10)
    assert result["code"] == 0
    assert reading.signed is not None
    verdict = check_reading(
        reading.signed, device_id="gw-meter", public_key=public, last_seq=None,
        boundary_ms=int(now.timestamp() * 1000), max_age_ms=5_000,
    )  # fmt: skip
    assert verdict.ok, verdict.reason
    assert str(key_file.read_text()) not in served  # the key file's content never printed
