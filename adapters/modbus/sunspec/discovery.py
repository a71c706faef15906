"""SunSpec discovery: find the ``SunS`` marker and read the model chain from a device (I/O).

:func:`discover` looks for ``SunS`` at 40000, 0, then 50000 (:data:`BASE_ADDRESSES`), then
reads each model header and the whole model up to the end model, through a
:class:`~adapters.modbus.client.RegisterClient`. The models it finds are laid out by
:mod:`adapters.modbus.sunspec.models`; vendor models pysunspec2 does not define are skipped
by their length.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from adapters.modbus.client import RegisterClient
from adapters.modbus.codec import Table
from adapters.modbus.errors import DeviceError, SunSpecError
from adapters.modbus.protocol import ADDRESS_SPACE, MAX_READ_REGISTERS, ExceptionCode
from adapters.modbus.sunspec.device import (
    BASE_ADDRESSES,
    END_MODEL_ID,
    MARKER_REGISTERS,
    ModelInstance,
    SunSpecDevice,
)
from adapters.modbus.sunspec.models import layout_model, model_definition

LOGGER = logging.getLogger(__name__)
# An exception answer at a base address that means "no SunSpec marker here".
_NOTHING_THERE = frozenset({ExceptionCode.ILLEGAL_FUNCTION, ExceptionCode.ILLEGAL_DATA_ADDRESS})


def fetch_registers(client: RegisterClient, address: int, count: int) -> list[int]:
    """Read ``count`` holding registers from ``address`` in requests of at most 125.

    Parameters
    ----------
    client : RegisterClient
        The device's transport.
    address : int
        First register.
    count : int
        Registers to read, any number (0 reads nothing).

    Returns
    -------
    list of int
        ``count`` registers.

    Raises
    ------
    DeviceUnavailable, DeviceError
        From the client.
    """
    out: list[int] = []
    while count > 0:
        n = min(count, MAX_READ_REGISTERS)
        out.extend(client.read_registers(Table.HOLDING.value, address, n))
        address += n
        count -= n
    return out


def discover(
    client: RegisterClient,
    *,
    base_addresses: Sequence[int] = BASE_ADDRESSES,
    max_models: int = 64,
) -> SunSpecDevice:
    """Find a device's SunSpec chain: the ``SunS`` marker, then every model to the end model.

    Each model is read whole (so repeating groups are laid out from their counts) and kept
    in :attr:`ModelInstance.registers`.

    Parameters
    ----------
    client : RegisterClient
        The device's transport.
    base_addresses : sequence of int
        Where to look for ``SunS``, in order.
    max_models : int
        Give up after this many models (a chain without an end model).

    Returns
    -------
    SunSpecDevice
        The chain.

    Raises
    ------
    SunSpecError
        No marker at any base address, a model header that makes no sense, a chain that
        runs past 65535 or ``max_models``, or a known model whose registers do not fit its
        definition.
    DeviceUnavailable, DeviceError
        The device did not answer, or answered with an exception (an "illegal function" or
        "illegal data address" answer at a base address counts as "no marker there", and
        "illegal data address" after the last model as the end of the chain).
    """
    base = None
    for candidate in base_addresses:
        try:
            marker = client.read_registers(Table.HOLDING.value, candidate, 2)
        except DeviceError as exc:
            if exc.code in _NOTHING_THERE:
                continue
            raise
        if tuple(marker) == MARKER_REGISTERS:
            base = candidate
            break
    if base is None:
        tried = ", ".join(str(b) for b in base_addresses)
        msg = f"no SunSpec marker 'SunS' at {tried}: not a SunSpec device, or wrong unit id"
        raise SunSpecError(msg)
    models: list[ModelInstance] = []
    address = base + 2
    while True:
        if address + 2 > ADDRESS_SPACE:
            msg = f"SunSpec chain at {base} runs past register 65535 without an end model"
            raise SunSpecError(msg)
        try:
            model_id, length = client.read_registers(Table.HOLDING.value, address, 2)
        except DeviceError as exc:
            if not models or exc.code != ExceptionCode.ILLEGAL_DATA_ADDRESS:
                raise
            # Some devices stop after their last model without the end model: the chain
            # ends where the registers do.
            LOGGER.warning("SunSpec chain at %s ends at %s without an end model", base, address)
            break
        if model_id == END_MODEL_ID:
            break
        if len(models) >= max_models:
            msg = f"SunSpec chain at {base}: more than {max_models} models, no end model"
            raise SunSpecError(msg)
        if model_id == 0 or address + 2 + length > ADDRESS_SPACE:
            msg = f"SunSpec chain at {base}: model {model_id} with L = {length} at {address}"
            raise SunSpecError(msg)
        regs = [model_id, length, *fetch_registers(client, address + 2, length)]
        try:
            definition = model_definition(model_id)
        except SunSpecError:
            layout = None  # a vendor model: skipped over by its L
        else:
            layout = layout_model(definition, registers=regs)
        models.append(ModelInstance(model_id, address, length, layout, tuple(regs)))
        address += 2 + length
    return SunSpecDevice(base, tuple(models))


__all__ = ["discover", "fetch_registers"]
