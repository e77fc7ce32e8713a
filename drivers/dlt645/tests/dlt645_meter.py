"""An independent DL/T 645-2007 meter for drivers/dlt645/tests/pydlt645.rs: the TCP server
of the `dlt645` package from PyPI (the version scripts/test pins), not our simulator.

Binds 127.0.0.1 on an ephemeral port and prints `PORT <n>`, then serves until stdin closes.
The meter's address and values are fixed here; the Rust test asserts the same numbers.
"""

import sys

from dlt645 import MeterServerService, configure_logging

# hermetic: no log files in the working directory
configure_logging(enabled=False)

# set_address takes the digits in wire order: on the line 20 23 12 01 00 42, which
# DL/T 645 (low byte first) reads as the name-plate address 420001122320
ADDRESS = "202312010042"

server = MeterServerService.new_tcp_server("127.0.0.1", 0, 5.0)
server.set_address(ADDRESS)
server.set_00(0x00010000, 1234.56)  # forward active energy, kWh
server.set_00(0x00020000, 7.89)  # reverse active energy, kWh
server.set_02(0x02010100, 221.3)  # phase A voltage, V
server.set_02(0x02020100, 12.345)  # phase A current, A
server.set_02(0x02030000, 2.4681)  # total active power, kW
server.set_02(0x02040000, -0.4321)  # total reactive power, kvar (negative: sign bit)
server.set_02(0x02060000, 0.987)  # total power factor
server.set_02(0x02800002, 49.98)  # grid frequency, Hz
if not server.start():
    sys.exit("the dlt645 TCP server did not start")
print(f"PORT {server.server.port}", flush=True)
sys.stdin.read()
server.stop()
