"""PeerGrid's Modbus edge: devices in, setpoints out (OpenEMS's bridge -> nature layering).

::

    Poller                              polling.py     one cycle: every device read at once,
       |                                               none able to stall it (deadline)
    DiscoveringReader/Writer            discovered.py  ``map = "sunspec"``: the models found
       |                                               on first contact, the map kept
    DeviceReader      DeviceWriter      reading.py     MeterReading in, Setpoint out; failures
       |                  |             writing.py     are values (MISSING/STALE, ok=False)
    RegisterImage, plan_reads           image.py       one read pass: requests, registers
       |                                               and the fields decoded from them
    decode_field / encode_field         fields.py      a field's registers <-> its value
       |
    RegisterMap, RegisterField, Target  regmap.py      the map schema, validated (pure)
       ^                                mapfiles.py    JSON map files -> RegisterMap; the
       |                                               built-in maps are data in registermaps/
    sunspec/  models.py                                pysunspec2's model definitions as data,
              device.py                                point layout and decoding (pure); a
              discovery.py                             model chain and its generated map;
                                                       discovery through a RegisterClient
    codec                               codec.py       registers <-> values (pure)

    RegisterClient (Protocol)           client.py      ModbusTkClient (TCP, or RTU on an
                                                       RtuLine): the modbus_tk master
                                        frames.py      PDUs and frame lengths, checked (pure)
                                        protocol.py    function and exception codes, request
                                                       limits: the protocol's numbers, once
                                        fake.py        FakeRegisterClient (memory)

``simulators/`` serves simulated devices (real Modbus servers, TCP and RTU) for the demo and
the tests; import it explicitly. Errors: :mod:`adapters.modbus.errors`. No module here
imports one that imports it back.
"""

from adapters.modbus.client import ModbusTkClient, RegisterClient, RtuLine
from adapters.modbus.codec import RegisterKind, Table, WordOrder
from adapters.modbus.discovered import (
    SUNSPEC_DISCOVERY,
    DiscoveredMap,
    DiscoveringReader,
    DiscoveringWriter,
)
from adapters.modbus.errors import (
    AdapterError,
    CodecError,
    DeviceError,
    DeviceUnavailable,
    InvalidArgument,
    InvalidFrame,
    RegisterMapError,
    SimulatorNotStarted,
    SunSpecError,
    WriteRefused,
)
from adapters.modbus.fake import FakeRegisterClient
from adapters.modbus.mapfiles import (
    available_register_maps,
    load_register_map,
    parse_register_map,
)
from adapters.modbus.polling import Poller, poll_all
from adapters.modbus.reading import Backoff, DeviceHealth, DeviceReader, fetch_fields
from adapters.modbus.regmap import RegisterField, RegisterMap, Target
from adapters.modbus.sunspec.device import SunSpecDevice, declared_device
from adapters.modbus.sunspec.discovery import discover
from adapters.modbus.writing import DeviceWriter, WriteResult

__all__ = [
    "SUNSPEC_DISCOVERY",
    "AdapterError",
    "Backoff",
    "CodecError",
    "DeviceError",
    "DeviceHealth",
    "DeviceReader",
    "DeviceUnavailable",
    "DeviceWriter",
    "DiscoveredMap",
    "DiscoveringReader",
    "DiscoveringWriter",
    "FakeRegisterClient",
    "InvalidArgument",
    "InvalidFrame",
    "ModbusTkClient",
    "Poller",
    "RegisterClient",
    "RegisterField",
    "RegisterKind",
    "RegisterMap",
    "RegisterMapError",
    "RtuLine",
    "SimulatorNotStarted",
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
    "parse_register_map",
    "poll_all",
]
