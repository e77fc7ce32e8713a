#!/usr/bin/env python3
"""An RTP receiver that is not campusgw's code: standard library only.

Binds 127.0.0.1:0, prints {"port": N} on one line, then receives UDP until no packet has come
for --idle seconds (or --max-wait passes), parses each RTP header (RFC 3550 section 5.1) and
prints one JSON report: packets, payload types, SSRCs, sequence gaps, timestamp deltas and
payload sizes (as histograms), and how many packets were not RTP version 2.
"""
import argparse
import json
import socket
import struct
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--max-wait", type=float, default=120.0)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print(json.dumps({"port": s.getsockname()[1]}), flush=True)
    start = time.monotonic()
    last = None
    packets, not_rtp, gaps = 0, 0, 0
    pts, ssrcs, ts_deltas, sizes = {}, set(), {}, {}
    prev = {}
    while time.monotonic() - start < a.max_wait:
        if last is not None and time.monotonic() - last > a.idle:
            break
        s.settimeout(0.2)
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            continue
        last = time.monotonic()
        packets += 1
        if len(data) < 12 or data[0] >> 6 != 2:
            not_rtp += 1
            continue
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        cc = b0 & 0x0F
        payload = len(data) - 12 - 4 * cc
        pt = b1 & 0x7F
        pts[str(pt)] = pts.get(str(pt), 0) + 1
        sizes[str(payload)] = sizes.get(str(payload), 0) + 1
        ssrcs.add(ssrc)
        if ssrc in prev:
            pseq, pts_ = prev[ssrc]
            if seq != (pseq + 1) & 0xFFFF:
                gaps += 1
            d = (ts - pts_) & 0xFFFFFFFF
            ts_deltas[str(d)] = ts_deltas.get(str(d), 0) + 1
        prev[ssrc] = (seq, ts)
    print(json.dumps({
        "packets": packets,
        "not_rtp": not_rtp,
        "payload_types": pts,
        "ssrcs": len(ssrcs),
        "seq_gaps": gaps,
        "timestamp_deltas": ts_deltas,
        "payload_sizes": sizes,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
