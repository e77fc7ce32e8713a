#!/usr/bin/env python3
"""A pymodbus (3.x) Modbus TCP server for campusgw-modbus's interop test.

Binds 127.0.0.1 on an ephemeral port and prints `PORT <n>` on stdout, then serves until
stdin closes. Fixed data (zero-based protocol addresses):
  discrete input 3 = on (fire alarm output already active)
  input registers 10-11 = f32 21.5, high word first
  coil 0 = off, holding register 20 = 0

Each stdin line is a command, answered by one stdout line:
  get <fc> <address>          -> the value (fc: 1 coil, 2 discrete input, 3 holding, 4 input)
  set <fc> <address> <value>  -> ok
The test reads back writes and flips inputs through pymodbus's own datastore.
"""

import asyncio
import logging
import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

SIZE = 100


def initial_context():
    hi, lo = struct.unpack(">HH", struct.pack(">f", 21.5))
    di = [False] * SIZE
    di[3] = True
    ir = [0] * SIZE
    ir[10], ir[11] = hi, lo
    # pymodbus's sequential block starts at protocol address `address - 1`: 1 means 0.
    device = ModbusDeviceContext(
        di=ModbusSequentialDataBlock(1, di),
        co=ModbusSequentialDataBlock(1, [False] * SIZE),
        hr=ModbusSequentialDataBlock(1, [0] * SIZE),
        ir=ModbusSequentialDataBlock(1, ir),
    )
    return ModbusServerContext(devices=device, single=True)


async def commands(server):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        parts = line.split()
        try:
            if parts[0] == "get":
                fc, address = int(parts[1]), int(parts[2])
                values = await server.context.async_getValues(0, fc, address, 1)
                print(int(values[0]), flush=True)
            elif parts[0] == "set":
                fc, address, value = int(parts[1]), int(parts[2]), int(parts[3])
                await server.context.async_setValues(0, fc, address, [value])
                print("ok", flush=True)
            else:
                print(f"error unknown command {parts[0]}", flush=True)
        except Exception as exc:  # report, keep serving
            print(f"error {exc!r}", flush=True)


async def main():
    logging.disable(logging.WARNING)
    server = ModbusTcpServer(initial_context(), address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await commands(server)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
