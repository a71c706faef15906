"""Read passes: the requests that read a set of fields, and the registers they returned.

:func:`plan_reads` groups fields into as few read requests as the protocol allows (pure);
a :class:`RegisterImage` holds the registers of one pass (OpenEMS's process image, per
device) and decodes fields from them, so a reader or writer looks at one consistent
snapshot of the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.modbus import codec
from adapters.modbus.client import RegisterClient
from adapters.modbus.codec import Table, Value
from adapters.modbus.errors import CodecError
from adapters.modbus.fields import decode_field
from adapters.modbus.protocol import MAX_READ_REGISTERS
from adapters.modbus.regmap import RegisterField, RegisterMap


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of ``table`` from ``address``."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count


def plan_reads(
    flds: Iterable[RegisterField],
    max_gap: int = 32,
    max_count: int = MAX_READ_REGISTERS,
) -> tuple[ReadBlock, ...]:
    """Group fields into as few read requests as the protocol allows.

    Fields of one table are sorted by address; neighbours share a request when the unused
    registers between them are at most ``max_gap`` and the request stays within
    ``max_count`` registers.

    Parameters
    ----------
    flds : iterable of RegisterField
        The fields to read.
    max_gap : int
        Largest run of unused registers [registers] a request may span.
    max_count : int
        Largest request [registers]; 125 for Modbus function 3/4.

    Returns
    -------
    tuple of ReadBlock
        Requests, holding registers first, each in address order.
    """
    blocks: list[ReadBlock] = []
    for table in Table:
        current: ReadBlock | None = None
        for f in sorted((f for f in flds if f.table is table), key=lambda f: f.address):
            if current is not None:
                end = max(current.end, f.end)
                if f.address - current.end <= max_gap and end - current.address <= max_count:
                    current = ReadBlock(table, current.address, end - current.address)
                    continue
                blocks.append(current)
            current = ReadBlock(table, f.address, f.count)
        if current is not None:
            blocks.append(current)
    return tuple(blocks)


class RegisterImage:
    """Registers of one device fetched in one read pass, by table and address.

    Parameters
    ----------
    register_map : RegisterMap
        The device's map; it names the scale factor field of each field.
    """

    def __init__(self, register_map: RegisterMap) -> None:
        self.register_map = register_map
        self._regs: dict[tuple[Table, int], int] = {}

    def fetch(self, client: RegisterClient, blocks: Iterable[ReadBlock]) -> None:
        """Read ``blocks`` through ``client`` into the image, one request per block.

        Parameters
        ----------
        client : RegisterClient
            The device's transport.
        blocks : iterable of ReadBlock
            The requests (:func:`plan_reads`).

        Raises
        ------
        DeviceUnavailable, DeviceError
            From the client.
        CodecError
            A client that answered with another number of registers than asked for.
        """
        for block in blocks:
            values = client.read_registers(block.table.value, block.address, block.count)
            if len(values) != block.count:
                msg = f"asked for {block.count} registers at {block.address}, got {len(values)}"
                raise CodecError(msg)
            for offset, value in enumerate(values):
                self._regs[block.table, block.address + offset] = value

    def registers(self, fld: RegisterField) -> list[int]:
        """The raw registers of ``fld`` (a :class:`KeyError` if the pass did not read them).

        Parameters
        ----------
        fld : RegisterField
            A field of the map, read in this pass.

        Returns
        -------
        list of int
            ``fld.count`` registers.
        """
        return [self._regs[fld.table, a] for a in range(fld.address, fld.end)]

    def scale_factor(self, fld: RegisterField) -> int | None:
        """The decoded scale factor of ``fld`` (``None``: it has none, or not implemented).

        Parameters
        ----------
        fld : RegisterField
            A field of the map, read in this pass.

        Returns
        -------
        int or None
            The exponent, ``-10 .. 10``.

        Raises
        ------
        CodecError
            A scale factor outside ``-10 .. 10``.
        """
        sf_field = self.register_map.scale_factor_of(fld)
        if sf_field is None:
            return None
        return codec.decode_scale_factor(self.registers(sf_field)[0])

    def value(self, fld: RegisterField) -> Value | None:
        """The physical value of ``fld``, in the field's own unit and sign.

        Parameters
        ----------
        fld : RegisterField
            A field of the map, read in this pass.

        Returns
        -------
        int, float, str or None
            ``None``: not implemented.

        Raises
        ------
        CodecError
            Registers that do not decode to the field's type.
        """
        return decode_field(fld, self.registers(fld), self.scale_factor(fld))

    def canonical(self, fld: RegisterField) -> float | None:
        """The value of ``fld`` in its target's unit and sign (``None``: not implemented).

        Parameters
        ----------
        fld : RegisterField
            A field of the map, read in this pass.

        Returns
        -------
        float or None
            In the target's canonical unit (W, Wh, % ...).

        Raises
        ------
        CodecError
            Registers that do not decode, or a text field.
        """
        value = self.value(fld)
        if value is None:
            return None
        if isinstance(value, str):
            msg = f"field {fld.name!r} holds text, not a number"
            raise CodecError(msg)
        return fld.to_canonical(value)


__all__ = ["ReadBlock", "RegisterImage", "plan_reads"]
