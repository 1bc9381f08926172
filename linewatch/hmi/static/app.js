// linewatch operator page: reads /events (Server-Sent Events: the /api/status JSON once a second, and at once
// when a reject arrives) and draws it. It redraws only what changed, and reloads a camera's overlay image at
// most once a second, except that a reject replaces a pass at once (each reload is a JPEG decode: on the
// station PC's CPU, a browser's work is the engine's loss).
// Plain JS, no framework, nothing loaded from outside. It only GETs, except the thresholds form, shown only
// when the server runs with --allow-changes (POST /api/thresholds with the operator's token).
"use strict";

const $ = (id) => document.getElementById(id);
const HEADS = ["anomaly", "adhesive"];  // linewatch.HEADS: the page has an element per head
const fmtPct = (t) => (t && t.yield_pct !== null && t.yield_pct !== undefined) ? t.yield_pct.toFixed(2) + " %" : "-";
const cams = new Map();  // camera -> {el, frame}

function text(id, v) { const e = $(id); if (e.textContent !== String(v)) e.textContent = String(v); }

function camera(name) {
  let c = cams.get(name);
  if (!c) {
    const el = $("camera-tpl").content.firstElementChild.cloneNode(true);
    el.querySelector(".name").textContent = name;
    $("cameras").appendChild(el);
    c = { el, frame: null };
    cams.set(name, c);
  }
  return c;
}

function drawCameras(s) {
  for (const [name, cam] of Object.entries(s.cameras)) {
    const c = camera(name);
    const q = (sel) => c.el.querySelector(sel);
    const st = q(".state");
    st.textContent = cam.state; st.className = "state " + cam.state;
    q(".dps").textContent = cam.decisions_per_s.toFixed(1);
    q(".lat").textContent = cam.latency_ms ? `${cam.latency_ms.p50.toFixed(1)} / ${cam.latency_ms.p99.toFixed(1)} ms` : "-";
    q(".rej").textContent = `${cam.rejects} of ${cam.decisions}`;
    q(".fs").textContent = cam.failsafe;
    const ov = cam.overlay;
    const now = Date.now();
    const first = ov && ov.decision === "reject" && !c.showsReject;  // a reject replaces a pass at once
    if (ov && ov.frame_id !== c.frame && (first || now - (c.loaded || 0) >= 1000)) {
      c.frame = ov.frame_id;
      c.loaded = now;
      c.showsReject = ov.decision === "reject";
      const img = q("img.overlay");
      img.src = `/overlay/${encodeURIComponent(name)}.jpg?f=${ov.frame_id}`;
      img.classList.toggle("reject", ov.decision === "reject");
      q(".caption").textContent = `frame ${ov.frame_id} · ${ov.decision.toUpperCase()}` +
        (ov.decision === "reject" ? ` (${ov.reason})` : "");
    }
  }
}

const drawn = new Map();  // what a part of the page was last drawn from (JSON): unchanged data, no redraw
function changed(part, data) {
  const key = JSON.stringify(data);
  if (drawn.get(part) === key) return false;
  drawn.set(part, key);
  return true;
}

function drawChart(perMinute) {
  if (!changed("chart", perMinute)) return;
  perMinute = perMinute.map((v) => Math.max(0, Math.floor(Number(v)) || 0));  // numbers only go into the markup
  const svg = $("chart"), w = 600, h = 120, n = perMinute.length, max = Math.max(1, ...perMinute);
  const bw = w / n, parts = [`<line x1="0" y1="${h - 0.5}" x2="${w}" y2="${h - 0.5}"/>`];
  perMinute.forEach((v, i) => {
    if (v > 0) {
      const bh = Math.max(2, (h - 14) * v / max);
      parts.push(`<rect x="${(i * bw + 1).toFixed(1)}" y="${(h - bh).toFixed(1)}" width="${(bw - 2).toFixed(1)}" ` +
                 `height="${bh.toFixed(1)}"><title>${n - 1 - i} min ago: ${v}</title></rect>`);
    }
  });
  parts.push(`<text x="4" y="12" fill="#8a96a3" font-size="11">max ${max}/min</text>`);
  svg.innerHTML = parts.join("");
}

function drawReasons(byReason) {
  if (!changed("reasons", byReason)) return;
  const body = $("reasons").tBodies[0];
  const rows = Object.entries(byReason).sort((a, b) => b[1] - a[1]);
  body.innerHTML = rows.length ? "" : `<tr><td class="muted">no rejects</td></tr>`;
  for (const [reason, n] of rows) {
    const tr = body.insertRow();
    tr.insertCell().textContent = reason;
    const td = tr.insertCell(); td.className = "n"; td.textContent = n;
  }
}

function draw(s) {
  const b = $("banner");
  b.className = "banner " + s.banner.state + (s.banner.failsafe ? " failsafe" : "");
  text("banner", (s.banner.failsafe ? "FAIL-SAFE: " : "") + s.banner.text);
  text("station", s.station || "linewatch");
  text("version", s.version ? "v" + s.version : "");
  text("model-id", (s.model && s.model.id) || "-");
  text("model-name", s.model && s.model.path ? s.model.path.split(/[\\/]/).pop() : "");  // the file, not the folder
  text("model-backend", s.model && s.model.backend ? `${s.model.backend}/${s.model.device || ""}` : "");
  text("thresholds", s.thresholds ? `anomaly ${s.thresholds.anomaly} · adhesive ${s.thresholds.adhesive}` : "-");
  text("rule", s.adhesive_rule || "-");
  text("hb-age", s.heartbeat_age_s === null ? "none yet" : s.heartbeat_age_s.toFixed(1) + " s ago");
  text("decisions", s.decisions); text("passes", s.passes); text("rejects", s.rejects); text("failsafe", s.failsafe);
  text("yield-start", fmtPct(s.yield.since_start));
  text("yield-hour", fmtPct(s.yield.hour));
  text("yield-shift", fmtPct(s.yield.shift));
  text("shift-key", s.yield.shift.key.split(" ")[1] || "");
  text("gaps", `${s.gaps.count} gap(s) · ${s.restarts} restart(s) · ${s.protocol_errors} bad message(s)`);
  drawCameras(s);
  drawReasons(s.by_reason);
  drawChart(s.rejects_per_minute);
  showRejects(s.recent_rejects || []);
  if (s.archive_dir) { $("archive-panel").hidden = false; maybeRefreshArchive(s); }
}

// Each reject the page has not shown yet: shown now, and its decision -> display time kept in
// window.linewatchRejectShownMs (the browser test reads it; same host clock as the daemon's on one PC).
const seenRejects = new Set();
window.linewatchRejectShownMs = [];
function showRejects(recent) {
  const now = Date.now();
  for (const r of recent) {
    const key = `${r.camera}/${r.frame_id}/${r.t_decision_ns}`;
    if (seenRejects.has(key)) continue;
    seenRejects.add(key);
    if (seenRejects.size > 1000) seenRejects.clear();
    if (r.t_decision_ns) window.linewatchRejectShownMs.push(now - r.t_decision_ns / 1e6);
  }
  const last = recent[recent.length - 1];
  if (last) text("last-reject", `last: ${last.camera} frame ${last.frame_id} · ${last.reason}`);
}

// The NG gallery (with --archive): the station record's newest rejects with their scores, filtered by reason
// and camera; a click on a row opens its kept frame with both masks. Fetched GALLERY_SETTLE_MS after the
// reject count changes (the record commits its rows in batches, at low priority), at most every
// GALLERY_GAP_MS (each fetch is a query of the journal on the station PC), and at once when a filter changes;
// an answer to an older fetch is dropped. While the page knows of a newer reject than the newest row (no
// filter set), or after an error, it asks again GALLERY_RETRY_MS later.
const GALLERY_LIMIT = 20, GALLERY_SETTLE_MS = 1000, GALLERY_GAP_MS = 2000, GALLERY_RETRY_MS = 2000;
const gallery = { rejects: -1, fetched: 0, timer: null, token: 0, newest: 0, retries: 0 };
const score = (v) => (v === null || v === undefined) ? "-" : Number(v).toFixed(3);

function addOptions(sel, values) {
  const have = new Set(Array.from(sel.options, (o) => o.value));
  for (const v of values) {
    if (have.has(v)) continue;
    const o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); have.add(v);
  }
}

function scheduleGallery(delay) {
  if (gallery.timer) return;  // one fetch pending already
  const wait = Math.max(delay, gallery.fetched + GALLERY_GAP_MS - Date.now());
  gallery.timer = setTimeout(() => { gallery.timer = null; fetchGallery(); }, wait);
}

function maybeRefreshArchive(s) {
  addOptions($("f-reason"), s.reject_reasons || []);
  addOptions($("f-camera"), Object.keys(s.cameras));
  const recent = s.recent_rejects || [];
  if (recent.length) gallery.newest = Math.max(gallery.newest, recent[recent.length - 1].t_decision_ns || 0);
  if (s.rejects === gallery.rejects) return;
  const first = gallery.rejects < 0;
  gallery.rejects = s.rejects;
  gallery.retries = 0;
  scheduleGallery(first ? 0 : GALLERY_SETTLE_MS);
}

function galleryFailed(note) {
  $("archive").tBodies[0].innerHTML = "";  // no rows of another filter beside the error
  drawn.delete("gallery");
  text("archive-note", note);
  scheduleGallery(GALLERY_RETRY_MS);
}

async function fetchGallery() {
  gallery.fetched = Date.now();
  const token = ++gallery.token;
  const filters = Object.entries({ reason: $("f-reason").value, camera: $("f-camera").value }).filter(([, v]) => v);
  const q = new URLSearchParams([["limit", String(GALLERY_LIMIT)], ...filters]);
  let r, body;
  try {
    r = await fetch("/api/rejects?" + q);
    body = await r.json();
  } catch (e) {
    if (token === gallery.token) galleryFailed("the station record did not answer; retrying…");
    return;
  }
  if (token !== gallery.token) return;  // a newer fetch (a filter changed) answers instead
  if (!r.ok) { galleryFailed(body.error || `HTTP ${r.status}`); return; }
  drawGallery(body.rejects);
  const newestRow = body.rejects.length ? body.rejects[0].t_decision_ns : 0;
  if (!filters.length && newestRow < gallery.newest && gallery.retries < 5) {  // not committed yet: ask again
    gallery.retries += 1;
    scheduleGallery(GALLERY_RETRY_MS);
  }
}

function drawGallery(rows) {
  text("archive-note", rows.length ? `the ${rows.length} newest` : "no reject matches");
  if (!changed("gallery", rows)) return;  // the same rows: nothing to redraw
  const body = $("archive").tBodies[0];
  body.innerHTML = "";
  addOptions($("f-camera"), rows.map((row) => row.camera));
  for (const row of rows) {
    const tr = body.insertRow();
    tr.dataset.frame = row.frame_id;
    tr.insertCell().textContent = new Date(row.t_decision_ns / 1e6).toLocaleTimeString([], { hour12: false });
    tr.insertCell().textContent = row.camera;
    tr.insertCell().textContent = row.frame_id;
    tr.insertCell().textContent = row.reason;
    for (const head of HEADS) {
      const td = tr.insertCell(); td.className = "n"; td.textContent = score(row[head]);
    }
    const td = tr.insertCell();
    if (row.image_url) {
      const img = document.createElement("img"); img.alt = "kept frame";
      img.onerror = () => { td.className = "muted"; td.textContent = "gone"; };  // the record's retention removed it
      img.src = row.image_url; td.appendChild(img);
    } else {
      td.className = "muted"; td.textContent = "not kept";
    }
    tr.addEventListener("click", () => openViewer(row));
  }
}

function openViewer(row) {
  text("viewer-title", `${row.camera} frame ${row.frame_id} · ${row.reason}`);
  text("viewer-scores", `${new Date(row.t_decision_ns / 1e6).toLocaleString()} · anomaly ${score(row.anomaly)} ` +
       `(threshold ${score(row.t_anomaly)}) · adhesive ${score(row.adhesive)} (threshold ${score(row.t_adhesive)})`);
  const frame = $("viewer-frame"), open = $("viewer-open"), cap = $("cap-frame");
  const noFrame = (why) => { frame.hidden = open.hidden = true; frame.removeAttribute("src"); cap.textContent = why; };
  frame.onerror = () => noFrame("frame: no longer in the station record (its retention removed it)");
  if (row.image_url) {
    frame.hidden = open.hidden = false; cap.textContent = "frame"; frame.src = row.image_url; open.href = row.image_url;
  } else noFrame("frame: not kept");
  for (const head of HEADS) {
    const img = $("viewer-mask-" + head), cap = $("cap-mask-" + head), url = (row.mask_urls || {})[head];
    const none = () => {
      img.hidden = true;
      cap.textContent = `${head} mask: none kept` + (row.failsafe ? ` (fail-safe: ${row.reason})` : "");
    };
    img.onerror = none;
    if (url) { img.hidden = false; cap.textContent = `${head} mask (score ${score(row[head])})`; img.src = url; } else none();
  }
  const d = $("viewer");
  if (!d.open) d.showModal();
}

for (const id of ["f-reason", "f-camera"]) {
  $(id).addEventListener("change", () => { clearTimeout(gallery.timer); gallery.timer = null; fetchGallery(); });
}

function connect() {
  const es = new EventSource("/events");
  es.onmessage = (ev) => draw(JSON.parse(ev.data));
  es.onerror = () => {
    const b = $("banner");
    b.className = "banner silent failsafe";
    b.textContent = "FAIL-SAFE: the operator page lost its server (linewatch hmi); retrying…";
  };
}
connect();

// Changing thresholds (only when `linewatch hmi --allow-changes`: /api/status says "changes": true; otherwise
// no form and nothing but GETs). The token is kept in sessionStorage only (gone when the tab closes).
async function setupChanges() {
  let s;
  try { s = await (await fetch("/api/status")).json(); } catch (e) { return; }
  if (!s.changes) return;
  const form = $("changes-panel"), result = $("changes-result"), token = $("set-token");
  $("mode").textContent = "changes allowed (token)";
  form.hidden = false;
  if (s.thresholds) { $("set-anomaly").value = s.thresholds.anomaly; $("set-adhesive").value = s.thresholds.adhesive; }
  token.value = sessionStorage.getItem("linewatch-token") || "";
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("linewatch-token", token.value);
    const body = {};  // an empty field leaves that threshold as it is
    for (const head of HEADS) {
      const v = $("set-" + head).value;
      if (v !== "") body[head] = Number(v);
    }
    result.className = "muted small"; result.textContent = "applying…";
    try {
      const r = await fetch("/api/thresholds", {
        method: "POST", headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token.value },
        body: JSON.stringify(body) });
      const a = await r.json();
      if (r.status === 401) sessionStorage.removeItem("linewatch-token");
      const nv = a.new ? `anomaly ${a.new.anomaly} · adhesive ${a.new.adhesive}` : "";
      result.classList.toggle("bad", !r.ok);
      result.textContent = r.ok ? `set ${nv}; daemon (pid ${a.pid}) signalled to reload` : (a.error || `HTTP ${r.status}`);
    } catch (e) { result.classList.add("bad"); result.textContent = "no answer from linewatch hmi: " + e; }
  });
}
setupChanges();
