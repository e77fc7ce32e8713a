#!/usr/bin/env bash
# Start to ready of one `campusgw run`: from exec to the first /healthz answer, the process's
# CPU time at that moment, and its RSS SETTLE seconds later. Used for the 2,000-device figures
# in bench/README.md (empty journal, or the one bench/backlog.sh filled).
#
# Usage: bench/ready.sh CAMPUSGW_BIN CONFIG CONSOLE_PORT [SETTLE=20]
set -euo pipefail
BIN=$1 CFG=$2 PORT=$3 SETTLE=${4:-20}
LOG=$(mktemp)
t0=$(date +%s%N)
"$BIN" run --config "$CFG" >"$LOG" 2>&1 &
pid=$!
until curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz"; do
  kill -0 $pid 2>/dev/null || { echo "campusgw exited; see $LOG" >&2; exit 1; }
  sleep 0.005
done
t1=$(date +%s%N)
cpu_ms=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' /proc/$pid/stat)
sleep "$SETTLE"
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
anon=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
kill -TERM $pid; wait $pid || true
printf '{"bench":"ready","start_to_ready_ms":%s,"cpu_ms_at_ready":%s,"rss_mib_after_%ss":%s,"anon_mib":%s,"load":"%s"}\n' \
  "$(( (t1 - t0) / 1000000 ))" "$cpu_ms" "$SETTLE" "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')" "$(awk -v k="$anon" 'BEGIN {printf "%.1f", k/1024}')" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$LOG"
