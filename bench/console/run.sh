#!/usr/bin/env bash
# 20 console sessions' RSS (issue 12): a fresh gateway with no devices, user `bench`, then
# bench/console/sessions_rss.py (one warm-up login first, so the argon2 block that the
# allocator keeps after the first hash is in the baseline, not in the per-session delta).
# Usage: bench/console/run.sh [path/to/campusgw]   (default target/release/campusgw)
set -euo pipefail
bin=${1:-target/release/campusgw}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/gateway.toml" <<TOML
[gateway]
id = "bench"
name = "bench"
data_dir = "$dir"
[console]
listen = "127.0.0.1:$port"
TOML
pw="bench-password-$RANDOM$RANDOM"
echo "$pw" | "$bin" admin set-password --data-dir "$dir" --user bench --role viewer >/dev/null
CAMPUSGW_LOG=warn "$bin" run --config "$dir/gateway.toml" &
pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
python3 "$(dirname "$0")/sessions_rss.py" "$pid" "$port" "$pw" --warmup "${@:2}"
