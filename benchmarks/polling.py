"""Polling benchmark: one full poll cycle over N simulated Modbus TCP devices on loopback.

Each simulated device is a ``LoadMeterSim`` (modbus_tk ``TcpServer``) serving a 50-register
holding block, laid out so that ``DeviceReader`` reads it in exactly one request of 50
registers. The simulators run in separate processes (as real devices would be separate), the
poller in this one.

* "poll cycle": ``adapters.modbus.polling.Poller.poll`` over N ``DeviceReader`` s, each with
  its own ``ModbusTkClient`` (connections already open, identity checked): concurrent reads,
  decoding, MeterReadings. Median and worst of ``--cycles`` cycles.
* "bare modbus-tk": the reference, measured in the same run against the same simulators:
  ``modbus_tk.modbus_tcp.TcpMaster.execute(1, READ_HOLDING_REGISTERS, 0, 50)`` once per
  device, sequentially, connections already open, no decoding. Median of ``--cycles`` sweeps.
* "ratio": poll cycle / bare sweep (below 1: the concurrent poller beats sequential raw
  reads).

    python benchmarks/polling.py [--sizes 10 100 500] [--cycles 7] [--processes 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from datetime import UTC, datetime

from modbus_tk import defines as mb
from modbus_tk import modbus_tcp

from adapters.modbus.client import ModbusTkClient
from adapters.modbus.mapfiles import parse_register_map
from adapters.modbus.polling import Poller
from adapters.modbus.reading import DeviceReader
from adapters.modbus.simulators import LoadMeterSim, constant_profile
from market.domain import BusId, DeviceId, ParticipantId, ReadingQuality

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
BLOCK = 50

# A 50-register meter: power at 0, counters at 24 and 48 (float32, holding), filler between.
BENCH_MAP = {
    "name": "bench50",
    "max_read_gap": 32,
    "defaults": {"table": "holding", "sunspec_nulls": False},
    "fields": [
        {"name": "power", "address": 0, "kind": "float32", "unit": "W", "target": "p_w"},
        *[{"name": f"info{a}", "address": a, "kind": "float32"} for a in range(2, 24, 2)],
        {"name": "imported", "address": 24, "kind": "float32", "unit": "kWh",
         "target": "import_wh_total"},
        *[{"name": f"info{a}", "address": a, "kind": "float32"} for a in range(26, 48, 2)],
        {"name": "exported", "address": 48, "kind": "float32", "unit": "kWh",
         "target": "export_wh_total"},
    ],
}  # fmt: skip


def serve(n, ports_out, stop):
    """Child process: start ``n`` simulators, report their ports, serve until ``stop``."""
    register_map = parse_register_map(BENCH_MAP, "bench50")
    sims = [
        LoadMeterSim(constant_profile(100 + i), register_map=register_map, start_at=T0)
        for i in range(n)
    ]
    for sim in sims:
        sim.start()
    ports_out.put([sim.port for sim in sims])
    stop.wait()
    for sim in sims:
        sim.stop()


def start_devices(n, processes):
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    queue = ctx.Queue()
    shares = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=serve, args=(k, queue, stop)) for k in shares if k]
    for p in procs:
        p.start()
    ports = []
    for _ in procs:
        ports.extend(queue.get(timeout=120))
    return ports, stop, procs


def measure_poller(ports, cycles):
    register_map = parse_register_map(BENCH_MAP, "bench50")
    clients = [ModbusTkClient("127.0.0.1", p, 1, timeout_s=2.0, retries=0) for p in ports]
    readers = {
        DeviceId(f"m{i}"): DeviceReader(
            DeviceId(f"m{i}"), ParticipantId("p"), BusId("b"), c, register_map
        )
        for i, c in enumerate(clients)
    }
    times = []
    with Poller(readers) as poller:
        warm = poller.poll(T0)  # connect
        bad = [r.reason for r in warm.values() if r.quality is not ReadingQuality.OK]
        if bad:
            sys.exit(f"warm-up failed: {bad[:3]}")
        for _ in range(cycles):
            readings = poller.poll(T0)
            assert all(r.quality is ReadingQuality.OK for r in readings.values())
            times.append(poller.last_cycle_s)
    requests = len(readers[DeviceId("m0")]._plan)
    for c in clients:
        c.close()
    return times, requests


def measure_bare(ports, cycles):
    masters = [modbus_tcp.TcpMaster("127.0.0.1", p, timeout_in_sec=2.0) for p in ports]
    for m in masters:
        m.execute(1, mb.READ_HOLDING_REGISTERS, 0, BLOCK)  # connect
    times = []
    for _ in range(cycles):
        started = time.perf_counter()
        for m in masters:
            m.execute(1, mb.READ_HOLDING_REGISTERS, 0, BLOCK)
        times.append(time.perf_counter() - started)
    for m in masters:
        m.close()
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--cycles", type=int, default=7)
    parser.add_argument("--processes", type=int, default=2, help="simulator processes")
    args = parser.parse_args(argv)

    rows = []
    for n in args.sizes:
        ports, stop, procs = start_devices(n, args.processes)
        try:
            poll, requests = measure_poller(ports, args.cycles)
            bare = measure_bare(ports, args.cycles)
        finally:
            stop.set()
            for p in procs:
                p.join(30)
        rows.append((n, requests, statistics.median(poll), max(poll), statistics.median(bare)))
        print(f"{n} devices done", file=sys.stderr)

    print(f"Python {sys.version.split()[0]}, {args.cycles} cycles per size, "
          f"{args.processes} simulator processes")  # fmt: skip
    print()
    print(
        "| devices | requests per device | poll cycle median ms | poll cycle max ms "
        "| bare modbus-tk sequential ms | ratio (cycle / bare) | per device ms |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, requests, med, worst, bare in rows:
        print(f"| {n} | {requests} | {med * 1e3:.1f} | {worst * 1e3:.1f} | {bare * 1e3:.1f} "
              f"| {med / bare:.2f} | {med / n * 1e3:.3f} |")  # fmt: skip
    over = [n for n, _, med, _, _ in rows if n <= 100 and med > 1.0]
    print()
    print("target: a full cycle of 100 devices in <= 1 s:", "MISSED" if over else "met")


if __name__ == "__main__":
    main()
