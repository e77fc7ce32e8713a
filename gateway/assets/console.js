// campusgw console: live alarm board (SSE), audible alert, acknowledge / resolve, small
// helpers. No framework, no build step; htmx does the page refreshes.
"use strict";

const csrf = () => document.body.dataset.csrf || "";

async function api(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await r.json(); } catch (_) { /* 204 */ }
  if (!r.ok) throw new Error((data && data.message) || r.statusText);
  return data;
}

// --- sound: WebAudio beeps, no asset needed. Browsers allow audio after a user gesture,
// so the board has a button that unlocks it.
let audio = null;
function beep(times) {
  if (!audio) return;
  const t0 = audio.currentTime;
  for (let i = 0; i < times; i++) {
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.frequency.value = i % 2 ? 660 : 880;
    g.gain.setValueAtTime(0.3, t0 + i * 0.4);
    g.gain.setValueAtTime(0, t0 + i * 0.4 + 0.3);
    o.connect(g).connect(audio.destination);
    o.start(t0 + i * 0.4);
    o.stop(t0 + i * 0.4 + 0.32);
  }
}

function text(el, s) { el.textContent = s == null ? "" : String(s); return el; }
function h(tag, cls) { const e = document.createElement(tag); if (cls) e.className = cls; return e; }
function where(loc) {
  loc = loc || {};
  return [loc.building, loc.floor, loc.zone, loc.point].filter(Boolean).join(" / ");
}

// --- alarm cards (alarms from the rules runner: alarm.* events carry the alarm).
const alarms = new Map();
function renderAlarm(a) {
  const list = document.getElementById("alarms");
  if (!list) return;
  let li = document.getElementById("alarm-" + a.id);
  if (a.state === "resolved") { if (li) li.remove(); alarms.delete(a.id); return; }
  if (!li) {
    li = h("li", "alarm");
    li.id = "alarm-" + a.id;
    list.prepend(li);
  }
  alarms.set(a.id, a);
  li.className = "alarm sev-" + (a.severity || "") + " st-" + (a.state || "") + " c-" + (a.class || "");
  li.replaceChildren();
  const head = h("div", "head");
  head.append(text(h("strong"), a.title || a.rule), text(h("span", "where"), where(a.location)),
              text(h("span", "badge"), a.state));
  const link = h("a"); link.href = "/alarms/" + encodeURIComponent(a.id); text(link, a.raised_at || "");
  head.append(link);
  li.append(head);
  if (a.acknowledged) {
    const ack = a.acknowledged;
    li.append(text(h("p", "ack"), "✔ " + ack[0] + " · " + ack[1] + (ack[2] ? " · " + ack[2] : "")));
  }
  const board = list.dataset;
  const note = h("input"); note.placeholder = board.note || "note"; note.className = "note";
  const ackBtn = text(h("button", "big ack"), board.ack || "Acknowledge");
  const resBtn = text(h("button", "big resolve"), board.resolve || "Resolve");
  ackBtn.type = resBtn.type = "button";
  ackBtn.onclick = () => act(a.id, "acknowledge", note.value, li);
  resBtn.onclick = () => act(a.id, "resolve", note.value, li);
  if (document.body.dataset.role !== "viewer") {
    const row = h("div", "actions");
    if (a.state !== "acknowledged") row.append(ackBtn);
    row.append(note, resBtn);
    li.append(row);
  }
}

async function act(id, what, note, li) {
  try {
    await api("POST", "/api/v1/alarms/" + encodeURIComponent(id) + "/" + what, { note: note || "" });
    li.classList.add("sent");
  } catch (e) {
    alert(e.message);
  }
}

function addRecent(ev) {
  const rows = document.getElementById("recent-rows");
  if (!rows || ev.class !== "life_safety") return;
  const empty = rows.querySelector(".empty");
  if (empty) empty.remove();
  const tr = h("tr", "c-" + ev.class + " fresh");
  tr.dataset.seq = ev.seq;
  tr.append(text(h("td"), ev.received_at), text(h("td"), ev.kind), text(h("td"), where(ev.location)),
            text(h("td"), ev.source && ev.source.device));
  rows.prepend(tr);
}

function isNewLifeSafetyAlarm(ev) {
  return ev.class === "life_safety" && (/\.alarm$/.test(ev.kind) || ev.kind === "alarm.raised");
}

function startBoard() {
  const list = document.getElementById("alarms");
  if (!list) return;
  fetch("/api/v1/alarms?state=open", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : []))
    .then((page) => (page.alarms || []).map((v) => v.alarm).reverse().forEach(renderAlarm))
    .catch(() => {});
  const src = new EventSource("/api/v1/stream?classes=life_safety,security,operations");
  const dot = document.getElementById("live-dot");
  src.onopen = () => dot && dot.classList.add("on");
  src.onerror = () => dot && dot.classList.remove("on");
  src.addEventListener("event", (m) => {
    const ev = JSON.parse(m.data);
    addRecent(ev);
    if (isNewLifeSafetyAlarm(ev)) beep(3);
  });
  src.addEventListener("alarm", (m) => {
    const ev = JSON.parse(m.data);
    const a = ev.payload || {};
    if (!a.id) return;
    renderAlarm(a);
    if (ev.kind === "alarm.raised" && a.class === "life_safety") beep(3);
    if (ev.kind === "alarm.raised") addRecent(ev);
  });
  const sound = document.getElementById("sound");
  if (sound) sound.onclick = () => {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    audio.resume();
    beep(1);
    sound.textContent = list.dataset.soundOn || "Sound on";
  };
}

function startRules() {
  document.querySelectorAll("button[data-rule]").forEach((b) => {
    b.onclick = async () => {
      try {
        await api("POST", "/api/v1/rules/" + encodeURIComponent(b.dataset.rule) + "/" + b.dataset.on);
        location.reload();
      } catch (e) { alert(e.message); }
    };
  });
}

function startAlarmDetail() {
  const d = document.getElementById("alarm-detail");
  if (!d) return;
  d.querySelectorAll("button[data-alarm-act]").forEach((b) => {
    b.onclick = async () => {
      try {
        await api("POST", "/api/v1/alarms/" + encodeURIComponent(d.dataset.alarm) + "/" + b.dataset.alarmAct,
                  { note: document.getElementById("note").value || "" });
        setTimeout(() => location.reload(), 300);
      } catch (e) { alert(e.message); }
    };
  });
}

function startSetup() {
  const f = document.getElementById("setup");
  if (!f) return;
  f.onsubmit = async (e) => {
    e.preventDefault();
    const d = new FormData(f);
    try {
      await api("POST", "/api/v1/setup", { token: d.get("token"), user: d.get("user"), password: d.get("password") });
      location.href = "/login";
    } catch (err) {
      const p = document.getElementById("setup-error");
      p.hidden = false; p.textContent = err.message;
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const out = document.getElementById("logout");
  if (out) out.onclick = async () => { try { await api("POST", "/api/v1/logout"); } finally { location.href = "/login"; } };
  startBoard();
  startRules();
  startAlarmDetail();
  startSetup();
});
