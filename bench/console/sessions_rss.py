# 20 concurrent console sessions (login + board page + open SSE stream each) against a
# running gateway; prints VmRSS before and after. With --warmup, one login and logout first
# (from its own address), so the baseline already holds what the first argon2 hash leaves.
# With --no-stream, no SSE streams (the sessions' own cost without their live feeds).
import http.client, json, sys, threading, time
pid, port, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
def login(i):
    # One client address per session: the login rate limit is per address.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(f"127.0.1.{i+1}", 0))
    c.request("POST", "/api/v1/login", json.dumps({"user": "bench", "password": password}), {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    return r.getheader("Set-Cookie").split(";")[0]
if "--warmup" in sys.argv:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=("127.0.2.1", 0))
    c.request("POST", "/api/v1/login", json.dumps({"user": "bench", "password": password}), {"Content-Type": "application/json"})
    c.getresponse().read()
time.sleep(2); base = rss()
conns = []
for i in range(20):
    cookie = login(i)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", "/", headers={"Cookie": cookie}); c.getresponse().read()
    s = None
    if "--no-stream" not in sys.argv:
        s = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        s.request("GET", "/api/v1/stream?classes=life_safety,security,operations", headers={"Cookie": cookie})
        s.getresponse()
    conns.append((c, s))
time.sleep(3); after = rss()
print(f"baseline_kib={base} with_20_sessions_kib={after} delta_kib={after-base}")
