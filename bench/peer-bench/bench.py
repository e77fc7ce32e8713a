#!/usr/bin/env python3
"""peer-bench: the same Modbus load, broker and counter for any gateway. See README.md.

For each scenario: start the simulator (modbus_sim.py), a private mosquitto and the counter
(mqtt_count.py), then the gateway from --gateway-cmd; sample the gateway's CPU and memory every
second; after the warm-up, count for --duration seconds; stop everything; print one JSON line.
"""
import argparse
import collections
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# NG Gateway's published layout: a channel is one Modbus TCP connection (here one server port),
# a device is one unit id on it, 1,000 points per device, polled every 1,000 ms.
SCENARIOS = {
    "10k_points_s": dict(channels=1, units=10, registers=1000, poll_ms=1000),
    "100k_points_s": dict(channels=10, units=10, registers=1000, poll_ms=1000),
}
TB_CMD = "{here}/peers/thingsboard/start.sh {layout} {workdir}"
TB_HELPER = "{python} {here}/peers/thingsboard/platform_stub.py --port {broker_port}"
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def spawn(cmd, log, cpus=None, **kw):
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def stop(proc, grace=15):
    """SIGTERM the process group we created for this child (its pgid is its pid), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def usage(pids):
    """(cpu seconds, VmRSS KiB, VmHWM KiB) summed over pids, from /proc/PID/stat and status."""
    cpu = rss = hwm = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            cpu += (int(f[11]) + int(f[12])) / CLK  # utime + stime (fields 14 and 15)
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss, hwm


class Sampler(threading.Thread):
    """Once a second: the gateway tree's CPU %, RSS and HWM, and the load tools' CPU %."""

    def __init__(self, gw_pid, load_pids):
        super().__init__(daemon=True)
        self.gw_pid, self.load_pids, self.rows, self.halt = gw_pid, load_pids, [], threading.Event()

    def run(self):
        prev = (time.time(), usage(tree(self.gw_pid))[0], usage(self.load_pids)[0])
        while not self.halt.wait(1 - time.time() % 1):
            now = time.time()
            cpu, rss, hwm = usage(tree(self.gw_pid))
            load_cpu = usage(self.load_pids)[0]
            dt = now - prev[0]
            self.rows.append(dict(t=now, cpu=max(0.0, cpu - prev[1]) / dt * 100, rss=rss / 1024, hwm=hwm / 1024,
                                  load_cpu=max(0.0, load_cpu - prev[2]) / dt * 100))
            prev = (now, cpu, load_cpu)


class Trap(threading.Thread):
    """A dead-end HTTP(S) proxy on loopback: records each request line a gateway sends out."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port, self.hits = self.sock.getsockname()[1], []

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed at the end of the run
                return
            conn.settimeout(2)
            try:
                self.hits.append(conn.recv(1024).split(b"\r\n")[0].decode("ascii", "replace"))
            except OSError:
                pass
            conn.close()


def jsonl(path):
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def pct(hist, q):
    """q-quantile of a {tenths of a second: count} histogram, in seconds."""
    total, seen = sum(hist.values()), 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= q * total:
            return k / 10
    return None


def make_layout(shape):
    ports = [free_port() for _ in range(shape["channels"])]
    units = list(range(1, shape["units"] + 1))
    broker = free_port()
    return {
        "modbus": {"host": "127.0.0.1", "ports": ports, "unit_ids": units, "function_code": 3,
                   "start_address": 0, "registers": shape["registers"], "data_type": "uint16",
                   "poll_ms": shape["poll_ms"], "value": "(unix time in tenths of a second + address) mod 65536"},
        "mqtt": {"host": "127.0.0.1", "port": broker, "url": f"mqtt://127.0.0.1:{broker}"},
        "point_key": "r<address>",
        "points_per_s": len(ports) * len(units) * shape["registers"] * 1000 // shape["poll_ms"],
    }


def run(work, layout, a):
    """Start load, broker, counter, helper and gateway; sample; stop all. Returns timing and samples."""
    mb, broker_port, py, load_cpus = layout["modbus"], layout["mqtt"]["port"], sys.executable, a.load_cpus or None
    ports, units = ",".join(map(str, mb["ports"])), ",".join(map(str, mb["unit_ids"]))
    fill = dict(here=HERE, python=py, layout=work / "layout.json", workdir=work / "gateway", modbus_host=mb["host"],
                modbus_ports=ports, unit_ids=units, registers=mb["registers"], poll_ms=mb["poll_ms"],
                broker_host="127.0.0.1", broker_port=broker_port, broker_url=layout["mqtt"]["url"])
    (work / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n")
    trap, procs = Trap(), {}
    try:
        procs["broker"] = spawn([a.mosquitto, "-c", str(work / "mosquitto.conf")], work / "mosquitto.log", load_cpus)
        procs["sim"] = spawn([py, str(HERE / "modbus_sim.py"), "--ports", ports, "--units", units,
                              "--registers", str(mb["registers"])], work / "sim.log", load_cpus)
        for p in mb["ports"] + [broker_port]:
            wait_port(p)
        procs["counter"] = spawn([py, str(HERE / "mqtt_count.py"), "--port", str(broker_port),
                                  "--point-key", a.point_key] + (["--point-pair", a.point_pair] if a.point_pair else []),
                                 work / "counter.log", load_cpus)
        if a.helper_cmd:
            procs["helper"] = spawn(["bash", "-c", "exec " + a.helper_cmd.format(**fill)], work / "helper.log",
                                    load_cpus)
        end = time.time() + 10
        while not all(any("subscribed" in r for r in jsonl(work / f"{k}.log")) for k in ("counter", "helper")
                      if k in procs):
            if time.time() > end:
                raise RuntimeError("counter or helper did not subscribe")
            time.sleep(0.1)

        trap.start()
        proxy = f"http://127.0.0.1:{trap.port}"
        env = dict(os.environ, TB_VENV=str(Path(a.root) / "tb-venv"), PEER_BENCH_LAYOUT=str(work / "layout.json"),
                   PEER_BENCH_BROKER_URL=layout["mqtt"]["url"], NO_PROXY="", no_proxy="",
                   **{k: proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                         "all_proxy")})
        t0 = time.time()
        procs["gateway"] = spawn(["bash", "-c", "exec " + a.gateway_cmd.format(**fill)], work / "gateway.log",
                                 a.gw_cpus or None, env=env, cwd=work / "gateway")
        sampler = Sampler(procs["gateway"].pid, [p.pid for k, p in procs.items() if k != "gateway"])
        sampler.start()
        m0 = math.ceil(t0 + a.warmup)  # the window: whole seconds [m0, m0 + duration)
        outage = None  # (stopped at, restarted at): --broker-outage
        while time.time() < m0 + a.duration + 0.5 and procs["gateway"].poll() is None:
            if a.broker_outage and outage is None and time.time() >= m0 + a.broker_outage[0]:
                stop(procs["broker"])
                outage = (time.time(), None)
            elif outage and outage[1] is None and time.time() >= outage[0] + a.broker_outage[1]:
                procs["broker"] = spawn([a.mosquitto, "-c", str(work / "mosquitto.conf")],
                                        work / "mosquitto-after-outage.log", load_cpus)
                outage = (outage[0], time.time())
            time.sleep(0.2)
        if outage:
            (work / "outage.json").write_text(json.dumps({"stopped_at": outage[0], "restarted_at": outage[1]}))
        exit_code = procs["gateway"].poll()  # None: it ran through the window
        sampler.halt.set()
        trap.sock.close()
    finally:
        for k in ("gateway", "helper", "counter", "sim", "broker"):
            if k in procs:
                stop(procs[k])
    return t0, m0, sampler.rows, trap.hits, exit_code


def summarize(name, work, layout, a, t0, m0, samples, hits, exit_code):
    m1 = m0 + a.duration
    counts = jsonl(work / "counter.log")
    per_s = {r["t"]: r for r in counts if "t" in r}
    window = [per_s.get(s, {}) for s in range(m0, m1)]
    served = [r for r in jsonl(work / "sim.log") if m0 <= r.get("t", 0) < m1]
    first = next((r["first_point_at"] for r in counts if "first_point_at" in r), None)
    topics = next((r["topics"] for r in reversed(counts) if "topics" in r), {})
    rows = [r for r in samples if m0 <= r["t"] <= m1 + 0.5]
    ages = collections.Counter()
    for r in window:
        ages.update({int(k): n for k, n in r.get("age", {}).items()})
    tot = lambda key: sum(r.get(key, 0) for r in window)  # noqa: E731
    med = lambda key: round(statistics.median(r[key] for r in rows), 1) if rows else None  # noqa: E731
    return {
        "peer": a.peer, "version": a.version, "scenario": name,
        "points_configured_per_s": layout["points_per_s"],
        "points_delivered_per_s": round(tot("points") / a.duration, 1),
        "cpu_pct_median": med("cpu"),
        "rss_mib_median": med("rss"),
        "rss_mib_peak": round(max((r["hwm"] for r in samples), default=0), 1) or None,
        "start_to_first_message_s": round(first - t0, 2) if first else None,
        "points_delivered_per_s_median": statistics.median(r.get("points", 0) for r in window),
        "msgs_per_s": round(tot("msgs") / a.duration, 1),
        "points_per_msg": round(tot("points") / tot("msgs"), 1) if tot("msgs") else None,
        "bytes_per_point": round(tot("bytes") / tot("points"), 1) if tot("points") else None,
        "points_polled_per_s": round(sum(r["registers"] for r in served) / a.duration, 1),
        "data_age_s_p50": pct(ages, 0.5), "data_age_s_p99": pct(ages, 0.99), "data_age_s_max": pct(ages, 1.0),
        "load_tools_cpu_pct_median": med("load_cpu"),
        # within 3 % of the configured rate (window edges cut bursts) and no backlog building up
        "kept_up": tot("points") >= 0.97 * layout["points_per_s"] * a.duration and (pct(ages, 1.0) or 0) <= 3,
        "outbound_attempts": sorted(set(hits)),
        "topic_count": len(topics), "topic_examples": sorted(topics)[:6],
        "gateway_exit_code": exit_code,
        "rss_mib_max": round(max((r["rss"] for r in rows), default=0), 1) or None,
        # the whole run, warm-up included: with --broker-outage, what arrived in the end
        "msgs_total": sum(r.get("msgs", 0) for r in per_s.values()),
        "points_total": sum(r.get("points", 0) for r in per_s.values()),
        "broker_outage": json.loads((work / "outage.json").read_text()) if (work / "outage.json").exists() else None,
        "gw_cpus": a.gw_cpus, "warmup_s": a.warmup, "window_s": a.duration,
        "date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
    }


def run_scenario(name, shape, a):
    work = Path(a.root) / "runs" / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "gateway").mkdir(parents=True)
    layout = make_layout(shape)
    (work / "layout.json").write_text(json.dumps(layout, indent=2))
    result = summarize(name, work, layout, a, *run(work, layout, a))
    (work / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="repeatable; default: all, in order")
    ap.add_argument("--gateway-cmd", default=TB_CMD,
                    help="command template; placeholders: {here} {layout} {workdir} {modbus_host} "
                         "{modbus_ports} {unit_ids} {registers} {poll_ms} {broker_host} {broker_port} "
                         "{broker_url}. Default: ThingsBoard IoT Gateway")
    ap.add_argument("--helper-cmd", default=None,
                    help="optional platform-side helper run on the load CPUs, same placeholders plus {python}; "
                         "default: the ThingsBoard stub when --gateway-cmd is the default, else none")
    ap.add_argument("--peer", default="thingsboard-gateway")
    ap.add_argument("--version", default="3.8.5")
    ap.add_argument("--point-key", default=r"^r(\d+)$", help="regex for point member names")
    ap.add_argument("--point-pair", default=None,
                    help="NAME:VALUE: also count objects whose string NAME matches --point-key and whose VALUE is a number")
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--duration", type=int, default=60)
    last = str(os.cpu_count() - 1)
    ap.add_argument("--gw-cpus", default=last if os.cpu_count() > 1 else "",
                    help="taskset CPU list for the gateway ('' = no pinning); default: the last CPU")
    ap.add_argument("--load-cpus", default=",".join(map(str, range(int(last)))),
                    help="taskset CPU list for simulator, broker and counter; default: the others")
    ap.add_argument("--broker-outage", default=None, type=lambda v: tuple(float(x) for x in v.split(":")),
                    help="AT:SECONDS: stop the broker AT seconds into the window for SECONDS, then restart it "
                         "(same port and config; nothing persisted). Make --duration long enough to catch up")
    ap.add_argument("--root", default="/tmp/peer-bench", help="venvs and run directories")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    a = ap.parse_args()
    if a.helper_cmd is None:
        a.helper_cmd = TB_HELPER if a.gateway_cmd == TB_CMD else ""
    for name in a.scenario or list(SCENARIOS):
        print(json.dumps(run_scenario(name, SCENARIOS[name], a)), flush=True)


if __name__ == "__main__":
    main()
