#!/usr/bin/env bash
# DESIGN §6: RSS with 2,000 configured devices and 1,000,000 events buffered, and start to
# ready with that backlog. Fills a journal with `campusgw bench startup` (1,000,000
# undelivered events of the benchmark mix; reused when already full), writes a config with
# DEVICES Modbus TCP devices (10 register points each, polled every 1 s, all at one
# simulator-less port that refuses connections, so every device runs its reconnect loop)
# and one MQTT uplink whose broker is down (every event stays buffered), then starts
# `campusgw run` RUNS times: start to the first /healthz answer, and RSS after SETTLE s.
#
# Usage: bench/backlog.sh CAMPUSGW_BIN DATA_DIR [DEVICES=2000] [EVENTS=1000000] [RUNS=3] [SETTLE=20]
set -euo pipefail
BIN=$1 DIR=$2 DEVICES=${3:-2000} EVENTS=${4:-1000000} RUNS=${5:-3} SETTLE=${6:-20}
mkdir -p "$DIR"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. The backlog (bench startup keeps <dir>/journal.db when it already holds EVENTS).
"$BIN" bench startup --events "$EVENTS" --runs 1 --data-dir "$DIR" >"$DIR/fill.json"

# 2. The config.
API=$(free_port) DEAD=$(free_port) BROKER=$(free_port)
{
  printf '[gateway]\nid = "backlog"\nname = "backlog bench"\ndata_dir = "%s"\n\n' "$DIR"
  printf '[[campus]]\nid = "main"\nname = "main"\n\n[console]\nlisten = "127.0.0.1:%s"\n\n' "$API"
  for d in $(seq 1 "$DEVICES"); do
    printf '[[device]]\nid = "m%s"\ndriver = "modbus_tcp"\naddress = "127.0.0.1:%s"\nunit = 1\npoll_interval = "1s"\n' "$d" "$DEAD"
    for a in $(seq 0 9); do
      printf '[[device.points]]\nname = "r%s"\ntable = "holding_register"\naddress = %s\n' "$a" "$a"
    done
  done
  printf '[[uplink]]\nname = "county"\nkind = "mqtt"\nurl = "mqtt://127.0.0.1:%s"\ntopic_prefix = "campusgw"\n' "$BROKER"
} >"$DIR/backlog.toml"
"$BIN" check-config "$DIR/backlog.toml" >/dev/null

# 3. Start to ready, RSS.
for r in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N)
  "$BIN" run --config "$DIR/backlog.toml" >"$DIR/run-$r.log" 2>&1 &
  pid=$!
  until curl -s -o /dev/null "http://127.0.0.1:$API/healthz"; do
    kill -0 $pid 2>/dev/null || { echo "campusgw exited; see $DIR/run-$r.log" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s%N)
  sleep "$SETTLE"
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  anon=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  printf '{"bench":"backlog","devices":%s,"events":%s,"run":%s,"start_to_ready_ms":%s,"rss_mib_after_%ss":%s,"anon_mib":%s,"rss_mib_peak":%s,"load":"%s"}\n' \
    "$DEVICES" "$EVENTS" "$r" "$(( (t1 - t0) / 1000000 ))" "$SETTLE" \
    "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')" "$(awk -v k="$anon" 'BEGIN {printf "%.1f", k/1024}')" "$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k/1024}')" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
done
