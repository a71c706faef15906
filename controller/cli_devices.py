"""``peergrid devices``: read a Modbus device, or serve a simulated one.

::

    peergrid devices read --host H --port P --unit U [--map sunspec|NAME|FILE]
                          [--rtu DEV --baud B] [--json]
    peergrid devices simulate {pv,meter,battery} --port P [--map NAME|FILE] [--unit U]
                          [--rtu DEV --baud B] [--rated-w W] [--power-w W] [--speed X]

``read`` prints the canonical :class:`~market.domain.MeterReading` (GRID sign: positive =
import) and, with ``--map sunspec`` (the default), the SunSpec models found with every
decoded point; with a register map it prints every field of the map. ``simulate`` serves a
simulator (TCP on ``--host:--port``, and/or RTU on ``--rtu``) until Ctrl-C, its clock
running at ``--speed`` times real time.

Exit codes: 0 ok; 1 the device failed (no answer, exception, not SunSpec, reading
MISSING; a simulator that cannot start); 2 bad input (arguments, register map).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.modbus import sunspec
from adapters.modbus.client import ModbusTkClient
from adapters.modbus.errors import AdapterError, RegisterMapError
from adapters.modbus.mapfiles import available_register_maps, load_register_map
from adapters.modbus.reading import DeviceReader, fetch_fields
from adapters.modbus.regmap import RegisterMap
from adapters.modbus.simulators import (
    BatterySim,
    DeviceSimulator,
    LoadMeterSim,
    PVInverterSim,
    clear_sky_profile,
    constant_profile,
)
from controller import cli_device_keys
from controller.cli_types import (
    baud_rate,
    finite_float,
    modbus_unit,
    non_negative_int,
    positive_seconds,
    tcp_port,
    tcp_port_or_zero,
)
from controller.config import DEFAULT_MAPS, DeviceKind
from controller.keys import KeyUnavailable
from market.codec import reading_to_dict
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

SIMULATOR_KINDS = tuple(k.value for k in (DeviceKind.PV, DeviceKind.METER, DeviceKind.BATTERY))
"""``devices simulate``'s kinds, as argparse choices (plain strings, in ``--help`` order)."""

log = logging.getLogger("peergrid.devices")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(f"peergrid devices: {text}\n")


# ---------------------------------------------------------------------------- read


def _client(args: argparse.Namespace) -> ModbusTkClient:
    if args.rtu:
        return ModbusTkClient.rtu(
            args.rtu, args.unit, baudrate=args.baud, timeout_s=args.timeout, retries=args.retries
        )
    return ModbusTkClient(args.host, args.port, args.unit, args.timeout, args.retries)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _models_to_dict(device: sunspec.SunSpecDevice) -> dict[str, Any]:
    models = []
    for m in device.models:
        points: dict[str, dict[str, Any]] = {}
        for p in m.decode():
            entry: dict[str, Any] = {"value": _jsonable(p.value)}
            if p.units:
                entry["units"] = p.units
            if p.symbol is not None:
                entry["symbol"] = p.symbol
            if p.flags:
                entry["flags"] = list(p.flags)
            points[p.path] = entry
        models.append(
            {
                "id": m.model_id,
                "name": m.name,
                "label": m.label,
                "address": m.address,
                "length": m.length,
                "points": points,
            }
        )
    return {"base_address": device.base_address, "models": models}


def _format_value(entry: dict[str, Any]) -> str:
    value = entry["value"]
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if entry.get("units"):
        text += f" {entry['units']}"
    if entry.get("symbol"):
        text += f" ({entry['symbol']})"
    if entry.get("flags"):
        text += f" [{', '.join(entry['flags'])}]"
    return text


def _print_text(report: dict[str, Any]) -> None:
    r = report["reading"]
    _out(f"device   {report['endpoint']}  map {report['map']}")
    soc = "-" if r["soc_percent"] is None else f"{r['soc_percent']:g} %"
    _out(
        f"reading  {r['quality']}  p_w {r['p_w']} W (+ = import)  import {r['import_wh_total']} Wh"
        f"  export {r['export_wh_total']} Wh  soc {soc}"
    )
    if r["reason"]:
        _out(f"         {r['reason']}")
    spec = report.get("sunspec")
    if spec:
        _out(f"SunSpec at {spec['base_address']}:")
        for m in spec["models"]:
            _out(
                f"  model {m['id']} {m['name']} ({m['label']}) at {m['address']}, L = {m['length']}"
            )
            for path, entry in m["points"].items():
                _out(f"    {path:<28} {_format_value(entry)}")
    fields = report.get("fields")
    if fields:
        _out("fields:")
        for name, value in fields.items():
            _out(f"  {name:<28} {_format_value({'value': value})}")


def _read(
    args: argparse.Namespace, client: ModbusTkClient, register_map: RegisterMap | None
) -> tuple[dict[str, Any], MeterReading]:
    report: dict[str, Any] = {"endpoint": client.endpoint, "map": args.map}
    device = None
    if register_map is None:
        device = sunspec.discover(client)
        register_map = device.register_map("sunspec", unit_id=args.unit)
        report["sunspec"] = _models_to_dict(device)
    reader = DeviceReader(
        DeviceId(args.device_id), ParticipantId("-"), BusId("-"), client, register_map
    )
    reading = reader.read(datetime.now(UTC))
    if device is None and reading.quality is ReadingQuality.OK:
        values = fetch_fields(client, register_map)
        report["fields"] = {k: _jsonable(v) for k, v in values.items()}
    report["reading"] = reading_to_dict(reading)
    return report, reading


def cmd_read(args: argparse.Namespace) -> int:
    """``devices read``: the canonical reading, and the models or fields of the device.

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.

    Returns
    -------
    int
        0 if the reading is OK; 1 if the device failed or the reading is not OK; 2 for a bad
        register map or serial/unit setting.
    """
    try:
        register_map = None if args.map == "sunspec" else load_register_map(args.map)
        client = _client(args)
    except ValueError as exc:  # RegisterMapError, or bad serial/unit settings
        _err(str(exc))
        return EXIT_BAD_INPUT
    try:
        report, reading = _read(args, client, register_map)
    except RegisterMapError as exc:  # a map without p_w cannot make a reading
        _err(str(exc))
        return EXIT_BAD_INPUT
    except AdapterError as exc:  # no answer, exception answer, not SunSpec
        _err(str(exc) if client.endpoint in str(exc) else f"{client.endpoint}: {exc}")
        return EXIT_FAILED
    finally:
        client.close()
    if args.json:
        _out(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return EXIT_OK if reading.quality is ReadingQuality.OK else EXIT_FAILED


# ---------------------------------------------------------------------------- simulate


def _make_simulator(args: argparse.Namespace, start: datetime) -> DeviceSimulator:
    kind = DeviceKind(args.kind)
    map_name = args.map or DEFAULT_MAPS[kind]
    options: dict[str, Any] = {
        "register_map": map_name,
        "unit_id": args.unit,
        "host": args.host,
        "port": args.port,
        "rtu": args.rtu,
        "baudrate": args.baud,
        "start_at": start,
        "device_id": args.device_id,
    }
    if args.signing_key:  # a signing meter or gateway: its key, never printed
        from controller.cli_device_keys import read_key_file  # noqa: PLC0415
        from controller.keys import DEFAULT_PASSWORD_ENV, keystore_password  # noqa: PLC0415

        env = args.key_password_env or DEFAULT_PASSWORD_ENV
        password = keystore_password(env, what=f"the device key file {args.signing_key}")
        options["signing_key"] = read_key_file(Path(args.signing_key), password)
        options["signed_block"] = args.signed_block
    if kind is DeviceKind.PV:
        rated = args.rated_w or 5000.0
        profile = clear_sky_profile(rated) if args.power_w is None else constant_profile(
            args.power_w
        )  # fmt: skip
        return PVInverterSim(rated, profile, **options)
    if kind is DeviceKind.METER:
        power = 1500.0 if args.power_w is None else args.power_w
        return LoadMeterSim(constant_profile(power), peak_w=abs(power), **options)
    return BatterySim(args.capacity_wh, args.rated_w or 5000.0, args.soc, **options)


def cmd_simulate(args: argparse.Namespace, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """``devices simulate``: serve a simulator until Ctrl-C (or ``--duration``).

    About every 0.2 s the simulator's clock is set to ``start + elapsed * --speed`` (elapsed
    wall time [s]).

    Parameters
    ----------
    args : argparse.Namespace
        The command's parsed flags.
    sleep : Callable
        Waits the given time [s] (tests pass a fake).

    Returns
    -------
    int
        0 when stopped; 1 if the simulator cannot serve; 2 for bad arguments.
    """
    if args.port is None and args.rtu is None:
        _err("give --port (0 = any free one) and/or --rtu DEVICE")
        return EXIT_BAD_INPUT
    if args.speed <= 0 or (args.duration is not None and args.duration < 0):
        _err("--speed must be > 0 and --duration >= 0")
        return EXIT_BAD_INPUT
    start = datetime.now(UTC)
    try:
        sim = _make_simulator(args, start)
    except (RegisterMapError, ValueError, KeyUnavailable) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    try:
        sim.start()
    except (OSError, TimeoutError) as exc:
        _err(f"cannot serve {args.kind}: {exc}")
        return EXIT_FAILED
    where = []
    if args.port is not None:
        where.append(f"tcp {sim.host}:{sim.port}")
    if args.rtu is not None:
        where.append(f"rtu {args.rtu} at {args.baud} baud")
    signing = ""
    if sim.public_key is not None:
        signing = (
            f"; signs as {sim.device_id} (block at input register {sim.signed_block}, public "
            f"key {sim.public_key.hex()})"
        )
    _out(
        f"serving {args.kind} ({sim.register_map.name}) unit {sim.unit_id} on "
        f"{' and '.join(where)}{signing}; Ctrl-C stops"
    )
    began = time.monotonic()
    try:
        while args.duration is None or time.monotonic() - began < args.duration:
            elapsed = time.monotonic() - began
            sim.advance(start + timedelta(seconds=elapsed * args.speed))
            sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    _out("stopped")
    return EXIT_OK


# ---------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``devices read`` and ``devices simulate`` to the ``peergrid`` parser.

    Parameters
    ----------
    sub : argparse subparsers action
        What ``ArgumentParser.add_subparsers`` returned for ``peergrid``.
    """
    devices = sub.add_parser("devices", help="read Modbus devices, serve simulated ones")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    maps = ", ".join(available_register_maps())

    read = devices_sub.add_parser(
        "read", help="print a device's canonical reading and its SunSpec models or fields"
    )
    read.add_argument("--host", default="127.0.0.1", help="TCP host (default 127.0.0.1)")
    read.add_argument("--port", type=tcp_port, default=502, help="TCP port (default 502)")
    read.add_argument("--unit", type=modbus_unit, default=1, help="Modbus unit id (default 1)")
    read.add_argument(
        "--map",
        default="sunspec",
        help=f"'sunspec' (discover the models; default), a built-in map ({maps}) or a JSON file",
    )
    read.add_argument("--rtu", metavar="DEV", help="read over Modbus RTU on this serial device")
    read.add_argument("--baud", type=baud_rate, default=19200, help="RTU speed (default 19200)")
    read.add_argument(
        "--timeout", type=positive_seconds, default=1.0, help="seconds per answer (default 1)"
    )
    read.add_argument(
        "--retries", type=non_negative_int, default=1, help="extra attempts (default 1)"
    )
    read.add_argument("--device-id", default="device", help="id to put in the reading")
    read.add_argument("--json", action="store_true", help="print JSON")
    read.set_defaults(func=cmd_read)

    sim = devices_sub.add_parser("simulate", help="serve a simulated device until Ctrl-C")
    sim.add_argument("kind", choices=SIMULATOR_KINDS, help="device kind")
    sim.add_argument("--host", default="127.0.0.1", help="TCP address (default 127.0.0.1)")
    sim.add_argument(
        "--port", type=tcp_port_or_zero, default=None, help="TCP port (0 = any free one)"
    )
    sim.add_argument("--unit", type=modbus_unit, default=1, help="Modbus unit id (default 1)")
    sim.add_argument(
        "--map",
        default=None,
        help="register map (default: pv sunspec_inverter, meter sdm630, battery battery; "
        "also sunspec_der_inverter, sunspec_meter, sunspec_storage, sunspec_der_storage)",
    )
    sim.add_argument("--rtu", metavar="DEV", help="also serve Modbus RTU on this serial device")
    sim.add_argument("--baud", type=baud_rate, default=19200, help="RTU speed (default 19200)")
    sim.add_argument(
        "--rated-w", type=finite_float, default=None, help="PV rating / battery power [W]"
    )
    sim.add_argument(
        "--power-w",
        type=finite_float,
        default=None,
        help="constant power [W] (PV available power, meter load; + = import for a meter); "
        "default: clear-sky PV, 1500 W load",
    )
    sim.add_argument("--capacity-wh", type=finite_float, default=10_000.0, help="battery capacity")
    sim.add_argument("--soc", type=finite_float, default=50.0, help="battery state of charge [%%]")
    sim.add_argument("--speed", type=finite_float, default=1.0, help="simulated seconds per second")
    sim.add_argument(
        "--duration", type=finite_float, default=None, help="stop after this many seconds"
    )
    sim.add_argument(
        "--device-id", default=None, help="the id it signs as (the site file's device id)"
    )
    sim.add_argument(
        "--signing-key",
        default=None,
        help="sign every reading with this device key file ('peergrid devices keys new')",
    )
    sim.add_argument(
        "--signed-block",
        type=int,
        default=0x7000,
        help="input register of the signed-reading block (default 28672 = 0x7000)",
    )
    sim.add_argument(
        "--key-password-env",
        default=None,
        help="environment variable with the key file's password (PEERGRID_KEYSTORE_PASSWORD)",
    )
    sim.set_defaults(func=cmd_simulate)
    cli_device_keys.register(devices_sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``devices ...`` on its own (``python -m controller.cli_devices devices read ...``).

    Parameters
    ----------
    argv : sequence of str or None
        The arguments (``None``: ``sys.argv[1:]``).

    Returns
    -------
    int
        The command's exit code (module docstring).
    """
    parser = argparse.ArgumentParser(prog="peergrid")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
