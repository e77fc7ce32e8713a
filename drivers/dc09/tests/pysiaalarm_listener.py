"""Runs a pysiaalarm SIAClient (the listening side, as Home Assistant uses it) on 127.0.0.1.

Usage: pysiaalarm_listener.py tcp|udp ACCOUNTS_JSON, where ACCOUNTS_JSON is a list of
{"account": str, "key": str|null}. Binds port 0 and prints {"ready": <port>} as its first
line, then one JSON line per event that pysiaalarm accepted (and ACKed): what it decoded.
Runs until stdin closes. Used by drivers/dc09/tests/transmit.rs (our Transmitter → it).

TCP runs the asyncio SIAClient (what Home Assistant uses); UDP the threaded one, because
3.2.2's asyncio UDP server fails its own `assert isinstance(transport,
asyncio.DatagramTransport)` in `connection_made` on Python 3.11 and never answers.
"""

import asyncio
import json
import sys
import threading

from pysiaalarm import SIAAccount, SIAClient as SyncSIAClient
from pysiaalarm.aio import CommunicationsProtocol, SIAClient

PRINT_LOCK = threading.Lock()


FIELDS = (
    "account", "code", "ri", "partition", "event_qualifier", "event_type",
    "message", "sequence", "receiver", "line", "encrypted", "valid_timestamp",
)


def report(event) -> None:
    out = {f: getattr(event, f, None) for f in FIELDS}
    out["message_type"] = event.message_type.value if event.message_type else None
    with PRINT_LOCK:
        print(json.dumps(out, default=str), flush=True)


async def on_event(event) -> None:
    report(event)


def run_udp(accounts) -> None:
    client = SyncSIAClient("127.0.0.1", 0, accounts, report, protocol=CommunicationsProtocol.UDP)
    client.start()
    with PRINT_LOCK:
        print(json.dumps({"ready": client.sia_server.server_address[1]}), flush=True)
    sys.stdin.read()
    client.stop()


async def run_tcp(accounts) -> None:
    client = SIAClient("127.0.0.1", 0, accounts, on_event, protocol=CommunicationsProtocol.TCP)
    await client.async_start()
    print(json.dumps({"ready": client.server.sockets[0].getsockname()[1]}), flush=True)
    # Until the test closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await client.async_stop()


def main() -> None:
    accounts = [SIAAccount(a["account"], a["key"]) for a in json.loads(sys.argv[2])]
    if sys.argv[1] == "udp":
        run_udp(accounts)
    else:
        asyncio.run(run_tcp(accounts))


if __name__ == "__main__":
    main()
