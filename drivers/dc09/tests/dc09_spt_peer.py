"""Sends DC-09 messages with dc09_spt 0.0.4 (an independent DC-09 transmitter) to our receiver.

Usage: dc09_spt_peer.py HOST TCP_PORT UDP_PORT
Prints one JSON object per message: {"case", "acked"} or {"case", "error"}.

Each message goes through dc09_spt's own send path (dc09_spt.transfer_msg: its encoder,
its TCP/UDP transport, its answer check, its NAK retry with the receiver's clock).

One shim, at the boundary only: dc09_spt 0.0.4 was written for pycrypto, which does not
build on Python 3.11; pycryptodome (already in the venv for pysiaalarm) has the same
Crypto.Cipher.AES but wants bytes where dc09_spt passes str. The shim encodes the str
arguments as latin-1 and changes nothing else (key, IV, mode, pad and layout are theirs).
"""
import json
import sys

from Crypto.Cipher import AES as _AES
from dc09_spt.comm.transpath import TransPath
from dc09_spt.dc09_spt import dc09_spt
from dc09_spt.msg.dc03_msg import dc03_msg
from dc09_spt.msg.dc05_msg import dc05_msg


def _b(v):
    return v.encode("latin-1") if isinstance(v, str) else v


class _Cipher:
    def __init__(self, inner):
        self.inner = inner

    def encrypt(self, data):
        return self.inner.encrypt(_b(data))

    def decrypt(self, data):
        return self.inner.decrypt(_b(data))


class _AesShim:
    MODE_CBC = _AES.MODE_CBC

    @staticmethod
    def new(key, mode, iv):
        return _Cipher(_AES.new(_b(key), mode, _b(iv)))


# The package's __init__ shadows the module name with its class; patch the module itself.
sys.modules["dc09_spt.msg.dc09_msg"].AES = _AesShim

KEY128 = "0123456789abcdef"
KEY256 = "0123456789abcdef0123456789abcdef"


def main():
    host, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cases = [
        # (case, transport, account, key, type, payload)
        ("cid_plain_tcp", "tcp", "1234", None, "ADM-CID",
         dc05_msg.dc05event("1234", {"code": "120", "q": "1", "area": "01", "zone": "5"})),
        ("sia_plain_udp", "udp", "1234", None, "SIA-DCS",
         dc03_msg.dc03event("1234", {"code": "BA", "area": "1", "zone": "7"})),
        ("null_plain_tcp", "tcp", "1234", None, "NULL", "]"),
        ("cid_aes128_tcp", "tcp", "AB12", KEY128, "ADM-CID",
         dc05_msg.dc05event("AB12", {"code": "130", "q": "1", "area": "02", "zone": "3"})),
        ("cid_aes128_udp", "udp", "AB12", KEY128, "ADM-CID",
         dc05_msg.dc05event("AB12", {"code": "110", "q": "1", "area": "02", "zone": "4"})),
        ("sia_aes256_tcp", "tcp", "CD34", KEY256, "SIA-DCS",
         dc03_msg.dc03event("CD34", {"code": "PA", "area": "1", "zone": "2"})),
    ]
    numbered = list(enumerate(cases, start=1))
    # dc09_spt numbers in hex ('{:04X}'): 10 is written 000A and 27 is 001B, which our
    # receiver accepts leniently and echoes as written (drivers/dc09/README.md).
    numbered += [
        (10, ("cid_plain_tcp_seq_000A", "tcp", "1234", None, "ADM-CID",
              dc05_msg.dc05event("1234", {"code": "121", "q": "1", "area": "01", "zone": "6"}))),
        (27, ("cid_aes128_udp_seq_001B", "udp", "AB12", KEY128, "ADM-CID",
              dc05_msg.dc05event("AB12", {"code": "131", "q": "1", "area": "02", "zone": "8"}))),
    ]
    for nr, (case, transport, account, key, mtype, payload) in numbered:
        port = tcp_port if transport == "tcp" else udp_port
        spt = dc09_spt(account)
        path = TransPath(host, port, account, key=key, type=transport)
        try:
            acked = spt.transfer_msg(nr, mtype, payload, path)
            print(json.dumps({"case": case, "acked": bool(acked), "payload": payload}), flush=True)
        except Exception as e:  # the test reports whatever dc09_spt raised
            print(json.dumps({"case": case, "error": repr(e)}), flush=True)


main()
