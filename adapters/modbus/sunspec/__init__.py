"""SunSpec devices: model definitions as data, the model chain, and discovery.

===================  =============================================================  =======
module               holds                                                          I/O
===================  =============================================================  =======
``models.py``        pysunspec2's JSON model definitions, point layout, decoding    no
``device.py``        a device's model chain (declared or found) and the register     no
                     map generated from it (``TARGET_SOURCES``)
``discovery.py``     the ``SunS`` marker at 40000/0/50000, then the model chain,     yes
                     read through a :class:`~adapters.modbus.client.RegisterClient`
===================  =============================================================  =======

Imports go one way: ``discovery`` -> ``device`` -> ``models``. The names below are
re-exported for ``from adapters.modbus import sunspec``.
"""

from adapters.modbus.sunspec.device import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    MARKER,
    TARGET_SOURCES,
    ModelInstance,
    Source,
    SunSpecDevice,
    declared_device,
)
from adapters.modbus.sunspec.discovery import discover, fetch_registers
from adapters.modbus.sunspec.models import (
    MODELS,
    DecodedPoint,
    GroupDef,
    ModelDef,
    ModelLayout,
    PlacedPoint,
    PointDef,
    available_models,
    decode_model,
    layout_model,
    model_definition,
    parse_model_definition,
)

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "MARKER",
    "MODELS",
    "TARGET_SOURCES",
    "DecodedPoint",
    "GroupDef",
    "ModelDef",
    "ModelInstance",
    "ModelLayout",
    "PlacedPoint",
    "PointDef",
    "Source",
    "SunSpecDevice",
    "available_models",
    "declared_device",
    "decode_model",
    "discover",
    "fetch_registers",
    "layout_model",
    "model_definition",
    "parse_model_definition",
]
