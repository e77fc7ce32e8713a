"""Parses DC-09 frames with pysiaalarm (the receiver Home Assistant uses), one per stdin line.

Each input line is a JSON object {"frame": "<CRC LEN body, without LF and CR>", "key": str|null,
"account": str}. For each, prints one JSON line: what pysiaalarm read, whether it accepts the
frame (CRC, timestamp window, decryption), the reply type it chooses, and the reply frame it
builds (so the Rust side can decode pysiaalarm's own ACK/NAK/DUH with our decoder).
Used by drivers/dc09/tests/pysiaalarm.rs.
"""

import json
import sys

from pysiaalarm import SIAAccount, SIAEvent


def main() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        acct = SIAAccount(req["account"], req["key"])
        try:
            ev = SIAEvent.from_line(req["frame"], {req["account"]: acct})
        except Exception as e:  # noqa: BLE001 - report every refusal to the test
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            continue
        reply = ev.create_response()
        print(
            json.dumps(
                {
                    "valid_message": ev.valid_message,
                    "valid_timestamp": ev.valid_timestamp,
                    "message_type": ev.message_type.value if ev.message_type else None,
                    "sequence": ev.sequence,
                    "receiver": ev.receiver,
                    "line": ev.line,
                    "account": ev.account,
                    "code": ev.code,
                    "ri": ev.ri,
                    "event_qualifier": ev.event_qualifier,
                    "event_type": ev.event_type,
                    "partition": ev.partition,
                    "response": ev.response.value if ev.response else None,
                    "reply": reply.decode("ascii"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
