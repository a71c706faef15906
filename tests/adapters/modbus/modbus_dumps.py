"""Literal register dumps of the built-in device maps, and a broken client, for the reader and
writer tests."""

# A SunSpec inverter at base 40000 as a register dump: identity, W = 3000 * 10^-1 = 300 W,
# WH = 123456 Wh, WRtg = 5000 W, WMaxLimPct = 10000 * 10^-2 = 100 %, limit disabled.
SUNSPEC = {
    40000: 0x5375, 40001: 0x6E53,  # "SunS"
    40002: 1, 40003: 66,
    40070: 103, 40071: 50,
    40084: 0x0BB8, 40085: 0xFFFF,  # W, W_SF = -1
    40094: 0x0001, 40095: 0xE240, 40096: 0x0000,  # WH (acc32), WH_SF = 0
    40122: 120, 40123: 26,
    40125: 5000, 40126: 0,  # WRtg, WRtg_SF
    40150: 123, 40151: 24,
    40155: 10000, 40159: 0, 40173: 0xFFFE,  # WMaxLimPct, WMaxLim_Ena, WMaxLimPct_SF = -2
    40176: 0xFFFF, 40177: 0,
}  # fmt: skip

# An SDM630: float32 input registers. 1234.5 W, 12.345 kWh imported, 0.5 kWh exported.
SDM630 = {
    0x34: 0x449A, 0x35: 0x5000,
    0x48: 0x4145, 0x49: 0x851F,
    0x4A: 0x3F00, 0x4B: 0x0000,
}  # fmt: skip

# A vendor battery: charging at 2000 W (device sign: negative = charge), SoC 50.0 %,
# charged 100000 Wh and discharged 12345 Wh (uint32, word-swapped), setpoint 0.
BATTERY = {
    100: 0xFFFF, 101: 0xF830,
    102: 500,
    104: 0x86A0, 105: 0x0001,
    106: 0x3039, 107: 0x0000,
    200: 0, 201: 0,
}  # fmt: skip


class BrokenClient:
    """A RegisterClient that lets a library error escape unwrapped."""

    def read_registers(self, table, address, count):
        msg = "driver bug"
        raise RuntimeError(msg)

    def write_registers(self, address, values):
        msg = "driver bug"
        raise RuntimeError(msg)

    def close(self):
        pass
