"""PeerGrid's Modbus edge: devices in, setpoints out (OpenEMS's bridge -> nature layering).

::

    DeviceReader / DeviceWriter        devices.py      MeterReading in, Setpoint out; failures
            |            |                             are values (MISSING, ok=False)
            |       RegisterMap        registermaps/   declarative JSON maps: address, type,
            |            |                             word order, scale, sign, target
            |          codec           codec.py        registers <-> values (pure)
            |
      RegisterClient (Protocol)        client.py       ModbusTkClient (TCP, the only modbus_tk
                                       fake.py         master) | FakeRegisterClient (memory)

``simulators.py`` serves simulated devices (real Modbus TCP servers) for the demo and tests;
import it explicitly. Errors: :mod:`adapters.modbus.errors`.
"""

from adapters.modbus.client import ModbusTkClient, RegisterClient
from adapters.modbus.codec import RegisterKind, Table, WordOrder
from adapters.modbus.devices import Backoff, DeviceHealth, DeviceReader, DeviceWriter, WriteResult
from adapters.modbus.errors import (
    AdapterError,
    CodecError,
    DeviceError,
    DeviceUnavailable,
    RegisterMapError,
    WriteRefused,
)
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.registermaps import (
    RegisterField,
    RegisterMap,
    Target,
    available_register_maps,
    load_register_map,
)

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
    "ModbusTkClient",
    "RegisterClient",
    "RegisterField",
    "RegisterKind",
    "RegisterMap",
    "RegisterMapError",
    "Table",
    "Target",
    "WordOrder",
    "WriteRefused",
    "WriteResult",
    "available_register_maps",
    "load_register_map",
]
