"""PeerGrid's Modbus edge: devices in, setpoints out (OpenEMS's bridge -> nature layering).

::

    Poller                             polling.py      one cycle: every device read at once,
            |                                          none able to stall it (deadline)
    DeviceReader / DeviceWriter        devices.py      MeterReading in, Setpoint out; failures
            |            |                             are values (MISSING/STALE, ok=False)
            |       RegisterMap        registermaps/   declarative JSON maps: address, type,
            |            |                             word order, scale, sign, target
            |            |  sunspec.py                 SunSpec: pysunspec2's model definitions
            |            |                             as data, discovery, generated maps
            |          codec           codec.py        registers <-> values (pure)
            |
      RegisterClient (Protocol)        client.py       ModbusTkClient (TCP, or RTU on an
                                                       RtuLine): the modbus_tk master
                                       frames.py       PDUs and frame lengths, checked (pure)
                                       fake.py         FakeRegisterClient (memory)

``simulators.py`` serves simulated devices (real Modbus servers, TCP and RTU) for the demo and
the tests; import it explicitly. Errors: :mod:`adapters.modbus.errors`.
"""

from adapters.modbus.client import ModbusTkClient, RegisterClient, RtuLine
from adapters.modbus.codec import RegisterKind, Table, WordOrder
from adapters.modbus.devices import (
    Backoff,
    DeviceHealth,
    DeviceReader,
    DeviceWriter,
    WriteResult,
    fetch_fields,
)
from adapters.modbus.errors import (
    AdapterError,
    CodecError,
    DeviceError,
    DeviceUnavailable,
    InvalidFrame,
    RegisterMapError,
    SunSpecError,
    WriteRefused,
)
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.polling import Poller, poll_all
from adapters.modbus.registermaps import (
    RegisterField,
    RegisterMap,
    Target,
    available_register_maps,
    load_register_map,
)
from adapters.modbus.sunspec import SunSpecDevice, declared_device, discover

__all__ = [
    "AdapterError",
    "Backoff",
    "CodecError",
    "DeviceError",
    "DeviceHealth",
    "DeviceReader",
    "DeviceUnavailable",
    "DeviceWriter",
    "FakeRegisterClient",
    "InvalidFrame",
    "ModbusTkClient",
    "Poller",
    "RegisterClient",
    "RegisterField",
    "RegisterKind",
    "RegisterMap",
    "RegisterMapError",
    "RtuLine",
    "SunSpecDevice",
    "SunSpecError",
    "Table",
    "Target",
    "WordOrder",
    "WriteRefused",
    "WriteResult",
    "available_register_maps",
    "declared_device",
    "discover",
    "fetch_fields",
    "load_register_map",
    "poll_all",
]
