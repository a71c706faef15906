"""Verifying 1,000 devices' signed readings per interval, on one core (issue 17).

Goal: at most 100 ms for a whole site's boundary snapshot. Each figure is printed beside the
reference measured in the same run: bare ECDSA P-256 verification with the same library
(``cryptography``'s ``EllipticCurvePublicKey.verify`` of DER signatures, the keys already
loaded), and as a ratio to it.

    python benchmarks/signed_readings.py [--devices 1000] [--rounds 5]

Measured, each the median of ``--rounds`` passes over all devices:

* ``reference``: bare ``verify`` per device (keys loaded once, outside the timing);
* ``check_reading, keys cached``: :func:`market.signed_readings.check_reading` per device,
  as the controller calls it (keys as the registry's 64 bytes, the process's key cache
  warm: every interval after the first);
* ``check_reading, keys cold``: the same with the key cache cleared first (the first
  interval after a start, or after every key rotated);
* ``last_seqs + check_reading``: what the controller does per boundary besides reading
  the registry: one query for every device's last accepted sequence in a SQLite store that
  holds a day of this site's verified readings (96 boundaries), then ``check_reading``.

The process is pinned to one core (``os.sched_setaffinity``) where the system allows it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from controller.store import Store
from market.domain import BusId, DeviceId, MeterReading, ParticipantId, ReadingQuality
from market.signed_readings import (
    ReadingPayload,
    SignedReading,
    check_reading,
    load_public_key,
    new_private_key,
    public_key_bytes,
    sign,
)
from market.units import W, Wh

BOUNDARY = 1_782_043_200  # a boundary [Unix s]
LENGTH = 900
GOAL_MS = 100.0


def timed(rounds: int, run: Callable[[], object]) -> float:
    """Median wall time of ``run`` over ``rounds`` [ms]."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def reading_of(device: str, seq: int, at: int, key: ec.EllipticCurvePrivateKey) -> MeterReading:
    payload = ReadingPayload(
        device_id=device,
        seq=seq,
        measured_at_ms=at * 1000 + 250,
        import_wh_total=10_000 + seq,
        export_wh_total=5_000 + seq,
        p_w=-1_500,
    )
    return MeterReading(
        device_id=DeviceId(device),
        participant=ParticipantId(f"p-{device}"),
        bus=BusId("b"),
        measured_at=datetime.fromtimestamp(at, UTC),
        p_w=W(payload.p_w),
        import_wh_total=Wh(payload.import_wh_total),
        export_wh_total=Wh(payload.export_wh_total),
        quality=ReadingQuality.OK,
        signed=sign(key, payload),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = "pinned to one core"
    except (AttributeError, OSError):
        pinned = "not pinned (no sched_setaffinity)"

    devices = [f"meter-{i:04d}" for i in range(args.devices)]
    private = {d: new_private_key() for d in devices}
    public = {d: public_key_bytes(k) for d, k in private.items()}
    now = {d: reading_of(d, 96, BOUNDARY, private[d]) for d in devices}
    signed: dict[str, SignedReading] = {}
    for d, r in now.items():
        assert r.signed is not None
        signed[d] = r.signed

    # reference: bare verification with the same library, keys loaded, DER signatures
    loaded = {d: load_public_key(public[d]) for d in devices}
    messages = {d: signed[d].payload.encode() for d in devices}
    der = {
        d: encode_dss_signature(
            int.from_bytes(signed[d].signature[:32], "big"),
            int.from_bytes(signed[d].signature[32:], "big"),
        )
        for d in devices
    }

    def bare() -> None:
        for d in devices:
            loaded[d].verify(der[d], messages[d], ec.ECDSA(hashes.SHA256()))

    def ours(last: dict[DeviceId, int] | None = None) -> None:
        for d in devices:
            verdict = check_reading(
                signed[d],
                device_id=d,
                public_key=public[d],
                last_seq=95 if last is None else last.get(DeviceId(d)),
                boundary_ms=BOUNDARY * 1000,
                max_age_ms=120_000,
            )
            if not verdict.ok:
                msg = f"{d}: {verdict.reason}"
                raise AssertionError(msg)

    def cold() -> None:
        load_public_key.cache_clear()
        ours()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        for k in range(96):  # a day of verified readings before the boundary
            at = BOUNDARY - (96 - k) * LENGTH
            store.save_readings(
                at,
                {DeviceId(d): reading_of(d, k, at, private[d]) for d in devices},
                key_block=k,
            )

        def controller() -> None:
            ours(store.last_seqs(BOUNDARY))

        ours()  # warm the key cache and the code paths
        reference = timed(args.rounds, bare)
        rows = [
            ("check_reading, keys cached", timed(args.rounds, ours)),
            ("check_reading, keys cold", timed(args.rounds, cold)),
            ("last_seqs + check_reading", timed(args.rounds, controller)),
        ]
        store.close()

    print(f"{args.devices} devices, median of {args.rounds} passes, {pinned}")
    print(f"{'':<30} {'ms':>8} {'x bare':>7} {'goal':>6}")
    print(f"{'reference: bare verify':<30} {reference:>8.1f} {1.0:>7.2f}")
    for name, ms in rows:
        ok = "ok" if ms <= GOAL_MS * args.devices / 1000 else "MISSED"
        print(f"{name:<30} {ms:>8.1f} {ms / reference:>7.2f} {ok:>6}")


if __name__ == "__main__":
    main()
