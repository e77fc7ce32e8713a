// campusgw console: the bulk import page. Sends the chosen file as the request body to
// POST /api/v1/import/preview, shows the problems by row and column and the changes, and
// applies a clean preview with its single-use id (POST /api/v1/import/apply).
"use strict";

(function () {
  const form = document.getElementById("import-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const csrf = () => document.body.dataset.csrf || "";
  let previewId = null;

  function list(id, items) {
    const ul = $("diff-" + id);
    ul.replaceChildren();
    $("n-" + id).textContent = "(" + items.length + ")";
    for (const item of items.slice(0, 200)) {
      const li = document.createElement("li");
      li.textContent = item;
      ul.append(li);
    }
    if (items.length > 200) {
      const li = document.createElement("li");
      li.textContent = "… +" + (items.length - 200);
      ul.append(li);
    }
  }

  function show(p) {
    $("import-result").hidden = false;
    $("import-summary").textContent =
      (p.table || "-") + " · " + p.rows + " " + (document.body.dataset.lang === "en" ? "rows" : "行") +
      " · sha256 " + p.file_sha256.slice(0, 16);
    const body = $("import-errors").querySelector("tbody");
    body.replaceChildren();
    for (const e of p.errors) {
      const tr = document.createElement("tr");
      tr.className = "import-error";
      const col = e.column ? e.column + (e.header ? " (" + e.header + ")" : "") : "";
      for (const v of [e.row === 0 ? "-" : e.row, col, e.message]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.append(td);
      }
      body.append(tr);
    }
    $("import-errors-box").hidden = p.errors.length === 0;
    $("import-clean").hidden = p.errors.length !== 0;
    list("added", p.diff.added);
    list("changed", p.diff.changed);
    list("removed", p.diff.removed);
    previewId = p.id || null;
    $("import-apply").hidden = !previewId;
  }

  async function answer(r) {
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error((data && data.message) || r.statusText);
    return data;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const file = $("import-file").files[0];
    if (!file) return;
    $("import-status").textContent = "…";
    $("import-status").className = "";
    $("import-done").hidden = true;
    try {
      const r = await fetch("/api/v1/import/preview?name=" + encodeURIComponent(file.name), {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream", "X-CSRF-Token": csrf() },
        body: file,
        credentials: "same-origin",
      });
      show(await answer(r));
      $("import-status").textContent = file.name;
    } catch (e) {
      $("import-result").hidden = true;
      $("import-status").textContent = e.message;
      $("import-status").className = "error";
    }
  });

  $("import-apply").addEventListener("click", async () => {
    if (!previewId) return;
    const id = previewId;
    previewId = null;
    $("import-apply").hidden = true;
    try {
      const r = await fetch("/api/v1/import/apply", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
        body: JSON.stringify({ id }),
        credentials: "same-origin",
      });
      const a = await answer(r);
      const done = $("import-done");
      done.textContent = done.dataset.restart + " " + a.message;
      done.hidden = false;
      done.className = "";
    } catch (e) {
      $("import-status").textContent = e.message;
      $("import-status").className = "error";
    }
  });
})();
