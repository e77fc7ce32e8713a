"""Runs a pysiaalarm SIAClient (the listening side, as Home Assistant uses it) on 127.0.0.1.

Usage: pysiaalarm_listener.py tcp|udp ACCOUNTS_JSON, where ACCOUNTS_JSON is a list of
{"account": str, "key": str|null}. Binds port 0 and prints {"ready": <port>} as its first
line, then one JSON line per event that pysiaalarm accepted (and ACKed): what it decoded.
Runs until stdin closes. Used by drivers/dc09/tests/transmit.rs (our Transmitter → it).
"""

import asyncio
import json
import sys

from pysiaalarm import SIAAccount
from pysiaalarm.aio import CommunicationsProtocol, SIAClient


FIELDS = (
    "account", "code", "ri", "partition", "event_qualifier", "event_type",
    "message", "sequence", "receiver", "line", "encrypted", "valid_timestamp",
)


async def on_event(event) -> None:
    out = {f: getattr(event, f, None) for f in FIELDS}
    out["message_type"] = event.message_type.value if event.message_type else None
    print(json.dumps(out, default=str), flush=True)


async def main() -> None:
    protocol = CommunicationsProtocol.UDP if sys.argv[1] == "udp" else CommunicationsProtocol.TCP
    accounts = [SIAAccount(a["account"], a["key"]) for a in json.loads(sys.argv[2])]
    client = SIAClient("127.0.0.1", 0, accounts, on_event, protocol=protocol)
    await client.async_start()
    if protocol == CommunicationsProtocol.TCP:
        port = client.server.sockets[0].getsockname()[1]
    else:
        port = client.transport.get_extra_info("sockname")[1]
    print(json.dumps({"ready": port}), flush=True)
    # Until the test closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await client.async_stop()


if __name__ == "__main__":
    asyncio.run(main())
