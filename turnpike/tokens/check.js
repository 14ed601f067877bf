// ICE servers check: get ICE servers from this server, then try to gather a relay candidate from
// every edge over every TURN transport, one RTCPeerConnection each, and report what happened.
"use strict";

// How long to wait for each relay candidate: 10 s, or ?timeout=SECONDS (1-60) in the page URL.
const GATHER_TIMEOUT_MS = (() => {
  const asked = Number(new URLSearchParams(window.location.search).get("timeout"));
  return Number.isFinite(asked) && asked >= 1 && asked <= 60 ? asked * 1000 : 10000;
})();
const PARALLEL = 6;

const $ = (id) => document.getElementById(id);

function transportLabel(url) {
  // turn:HOST:PORT?transport=udp  (HOST may be [v6])
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(\w+))?/i.exec(url);
  if (!m) return url;
  const secure = m[1].toLowerCase() === "turns";
  const proto = (m[4] || (secure ? "tcp" : "udp")).toUpperCase();
  const port = m[3] || (secure ? "5349" : "3478");
  return (secure ? "TLS " : proto + " ") + port;
}

function explainErrors(errors) {
  if (errors.length === 0) return "";
  const codes = new Set(errors.map((e) => e.code));
  if (codes.has(401) || codes.has(431) || codes.has(441)) {
    return "The relay refused the credentials (" + [...codes].join(", ") + ").";
  }
  if (codes.has(701)) {
    return "No answer from the relay on this transport: it may be down, or a firewall may block it.";
  }
  const e = errors[errors.length - 1];
  return "The browser reported error " + e.code + (e.text ? " (" + e.text + ")" : "") + ".";
}

function gatherRelay(server) {
  return new Promise((resolve) => {
    const started = performance.now();
    const errors = [];
    let pc;
    try {
      pc = new RTCPeerConnection({
        iceServers: [{ urls: server.urls, username: server.username, credential: server.credential }],
        iceTransportPolicy: "relay",
      });
    } catch (err) {
      resolve({ ok: false, detail: "The browser refused this ICE server: " + err.message });
      return;
    }
    let finished = false;
    const finish = (result) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      pc.close();
      resolve(result);
    };
    const timer = setTimeout(() => {
      finish({
        ok: false,
        detail: explainErrors(errors) ||
          "No relay candidate within " + GATHER_TIMEOUT_MS / 1000 + " seconds.",
      });
    }, GATHER_TIMEOUT_MS);
    pc.onicecandidateerror = (ev) => {
      errors.push({ code: ev.errorCode, text: ev.errorText || "" });
    };
    pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      if (c && c.candidate) {
        const isRelay = c.type === "relay" || / typ relay( |$)/.test(c.candidate);
        if (isRelay) {
          const parts = c.candidate.split(" ");
          const address = (c.address || parts[4]) + ":" + (c.port || parts[5]);
          finish({ ok: true, ms: performance.now() - started, address: address });
        }
      } else if (!c) {
        finish({
          ok: false,
          detail: explainErrors(errors) || "Gathering finished without a relay candidate.",
        });
      }
    };
    pc.createDataChannel("check");
    pc.createOffer()
      .then((offer) => pc.setLocalDescription(offer))
      .catch((err) => finish({ ok: false, detail: "The browser could not start ICE: " + err.message }));
  });
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function setSummary(text, kind) {
  const summary = $("summary");
  summary.textContent = text;
  summary.className = kind;
}

async function runPool(jobs, limit) {
  let next = 0;
  async function worker() {
    while (next < jobs.length) {
      const job = jobs[next++];
      await job();
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

async function fetchIceServers(body) {
  let resp;
  try {
    resp = await fetch("check/ice-servers", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (err) {
    throw new Error("Could not reach the token API from this browser (" + err.message + ").");
  }
  let doc = null;
  try {
    doc = await resp.json();
  } catch (err) {
    doc = null;
  }
  if (!resp.ok) {
    if (resp.status === 401) {
      throw new Error("The account SID or token was not accepted, so no ICE servers were issued.");
    }
    if (resp.status === 429) {
      throw new Error("Too many requests for this account right now; wait a minute and try again.");
    }
    const message = doc && doc.message ? doc.message : "HTTP " + resp.status;
    throw new Error("The token API refused the request: " + message + ".");
  }
  return doc;
}

async function runCheck(body) {
  const buttons = [$("run"), $("run-dev")];
  buttons.forEach((b) => { b.disabled = true; });
  const rows = $("rows");
  rows.replaceChildren();
  $("results").hidden = true;
  setSummary("Asking the token API for ICE servers…", "busy");
  try {
    if (typeof RTCPeerConnection !== "function") {
      setSummary("Nothing can work here: this browser has no WebRTC (RTCPeerConnection).", "bad");
      return;
    }
    let doc;
    try {
      doc = await fetchIceServers(body);
    } catch (err) {
      setSummary(err.message, "bad");
      return;
    }
    const checks = [];
    for (const edge of doc.edges) {
      for (const server of edge.ice_servers) {
        if (!/^turns?:/i.test(server.urls)) continue;
        const tr = document.createElement("tr");
        cell(tr, edge.location ? edge.name + " (" + edge.location + ")" : edge.name);
        cell(tr, transportLabel(server.urls));
        const status = cell(tr, "Checking…", "pending");
        const time = cell(tr, "");
        const detail = cell(tr, "");
        rows.appendChild(tr);
        checks.push({ edge: edge.name, transport: transportLabel(server.urls), server, status, time, detail });
      }
    }
    if (checks.length === 0) {
      setSummary("Nothing to check: the token API returned no TURN servers.", "bad");
      return;
    }
    $("results").hidden = false;
    setSummary("Gathering relay candidates from " + checks.length + " relay paths…", "busy");
    await runPool(checks.map((c) => async () => {
      const result = await gatherRelay(c.server);
      c.ok = result.ok;
      c.status.textContent = result.ok ? "Gathered" : "Not gathered";
      c.status.className = result.ok ? "gathered" : "failed";
      c.time.textContent = result.ok ? Math.round(result.ms) + " ms" : "—";
      c.detail.textContent = result.ok ? "relay address " + result.address : result.detail;
    }), PARALLEL);
    const good = checks.filter((c) => c.ok);
    if (good.length === checks.length) {
      setSummary("All " + checks.length + " relay paths work from this browser.", "ok");
    } else if (good.length === 0) {
      const paths = [...new Set(checks.map((c) => c.transport))];
      const listed = paths.length > 1
        ? paths.slice(0, -1).join(", ") + " and " + paths[paths.length - 1]
        : paths[0];
      setSummary(
        "Nothing works: this browser could not get a relay candidate from any edge on any " +
        "transport. Calls that need a relay will fail from this network. Check that " + listed +
        " to the relay hosts are allowed from here and that the relays are running.",
        "bad");
    } else {
      const names = good.map((c) => c.edge + " " + c.transport).join(", ");
      setSummary(
        good.length + " of " + checks.length + " relay paths work from this browser: " + names +
        ". Calls can still use those; see the table for the others.", "partial");
    }
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("check-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runCheck({ accountSid: $("sid").value.trim(), authToken: $("token").value.trim() });
  });
  $("run-dev").addEventListener("click", () => runCheck({ dev: true }));
  fetch("check/config", { cache: "no-store", credentials: "omit" })
    .then((r) => (r.ok ? r.json() : null))
    .then((cfg) => { if (cfg && cfg.dev) $("run-dev").hidden = false; })
    .catch(() => {});
});
