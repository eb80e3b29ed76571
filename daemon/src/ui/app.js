// SPDX-License-Identifier: Apache-2.0
// kldnet web UI: draws the service map and the flow table from the daemon's data.
// No external code: plain DOM and SVG.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const initial = JSON.parse(document.getElementById("kld-data").textContent);
  let flows = initial.flows || [];
  document.getElementById("node").textContent = "node " + (initial.node || "");

  function el(ns, tag, attrs, text) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Nodes on a circle in a stable order (sorted ids), edges as arrows between them.
  function drawMap(graph) {
    const svg = document.getElementById("map");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const defs = el(SVG, "defs");
    for (const v of ["forwarded", "dropped", "translated"]) {
      const m = el(SVG, "marker", { id: "arrow-" + v, viewBox: "0 0 10 10", refX: "10", refY: "5",
        markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" });
      m.appendChild(el(SVG, "path", { d: "M 0 0 L 10 5 L 0 10 z", class: "edge " + v }));
      defs.appendChild(m);
    }
    svg.appendChild(defs);
    const nodes = (graph.nodes || []).slice().sort((a, b) => a.id.localeCompare(b.id));
    const pos = {};
    const cx = 400, cy = 260, r = nodes.length > 1 ? 200 : 0;
    nodes.forEach((n, i) => {
      const a = (2 * Math.PI * i) / Math.max(nodes.length, 1) - Math.PI / 2;
      pos[n.id] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
    });
    const edges = el(SVG, "g", { id: "edges" });
    for (const e of graph.edges || []) {
      const s = pos[e.source], t = pos[e.target];
      if (!s || !t) continue;
      const v = e.verdict.toLowerCase();
      const dx = t[0] - s[0], dy = t[1] - s[1], len = Math.hypot(dx, dy) || 1;
      const k = 24 / len;
      const g = el(SVG, "g", { class: "edge-group" });
      const line = el(SVG, "line", {
        class: "edge " + v, "data-src": e.source, "data-dst": e.target, "data-verdict": e.verdict,
        "data-count": String(e.count), x1: s[0] + dx * k, y1: s[1] + dy * k, x2: t[0] - dx * k,
        y2: t[1] - dy * k, "marker-end": "url(#arrow-" + v + ")" });
      line.appendChild(el(SVG, "title", {}, e.source + " → " + e.target + ": " + e.count + " " + e.verdict +
        (e.services.length ? " via " + e.services.join(", ") : "") +
        (e.reasons.length ? " (" + e.reasons.join(", ") + ")" : "")));
      g.appendChild(line);
      g.appendChild(el(SVG, "text", { class: "edge-label", x: (s[0] + t[0]) / 2, y: (s[1] + t[1]) / 2 - 4 },
        e.count + (e.reasons.length ? " " + e.reasons[0] : "")));
      edges.appendChild(g);
    }
    svg.appendChild(edges);
    const layer = el(SVG, "g", { id: "nodes" });
    for (const n of nodes) {
      const [x, y] = pos[n.id];
      const g = el(SVG, "g", { class: "node " + n.kind, "data-id": n.id, transform: "translate(" + x + "," + y + ")" });
      g.appendChild(el(SVG, "circle", { r: 20 }));
      g.appendChild(el(SVG, "text", { y: 34 }, n.label));
      if (n.namespace) g.appendChild(el(SVG, "text", { y: 46, class: "muted" }, n.namespace));
      g.appendChild(el(SVG, "title", {}, n.id));
      layer.appendChild(g);
    }
    svg.appendChild(layer);
    const sel = document.getElementById("f-namespace");
    const have = new Set(Array.from(sel.options).map((o) => o.value));
    for (const n of nodes) {
      if (n.namespace && !have.has(n.namespace)) {
        sel.appendChild(el(null, "option", { value: n.namespace }, n.namespace));
        have.add(n.namespace);
      }
    }
  }

  function side(ep, ip, port) {
    const who = ep && ep.pod_name ? ep.namespace + "/" + ep.pod_name
      : ep && ep.labels && ep.labels.length ? ep.labels[0] : ip;
    return who + (port ? ":" + port : "");
  }

  function ports(f) {
    const l4 = f.l4 || {};
    const p = l4.TCP || l4.UDP || l4.SCTP || {};
    return [p.source_port, p.destination_port];
  }

  function drawTable() {
    const text = document.getElementById("f-text").value.toLowerCase();
    const body = document.querySelector("#flows tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    for (const line of flows) {
      const f = line.flow;
      if (!f) continue;
      const [sp, dp] = ports(f);
      const cells = [
        f.time.replace("T", " ").slice(0, 23),
        side(f.source, f.IP.source, sp),
        side(f.destination, f.IP.destination, dp) +
          (f.destination_service ? " (svc " + f.destination_service.namespace + "/" + f.destination_service.name + ")" : ""),
        (f.event_type && f.event_type.type === 1) ? "drop" : (f.trace_observation_point || f.Type).toLowerCase().replace(/_/g, "-"),
        f.verdict + (f.drop_reason_desc ? " " + f.drop_reason_desc : ""),
        f.Summary + (f.is_reply ? " (reply)" : ""),
      ];
      if (text && !cells.join(" ").toLowerCase().includes(text)) continue;
      const tr = el(null, "tr", { class: "flow verdict-" + f.verdict, "data-verdict": f.verdict,
        "data-src": f.source.pod_name ? f.source.namespace + "/" + f.source.pod_name : "",
        "data-dst": f.destination.pod_name ? f.destination.namespace + "/" + f.destination.pod_name : "",
        "data-drop-reason": f.drop_reason_desc || "" });
      const names = ["time", "source", "destination", "type", "verdict", "summary"];
      cells.forEach((c, i) => tr.appendChild(el(null, "td", { class: names[i] }, c)));
      body.appendChild(tr);
    }
    document.getElementById("status").textContent = body.children.length + " flows shown";
  }

  function params() {
    const p = new URLSearchParams();
    const ns = document.getElementById("f-namespace").value;
    const v = document.getElementById("f-verdict").value;
    const pod = document.getElementById("f-pod").value.trim();
    if (ns) p.set("namespace", ns);
    if (v) p.set("verdict", v);
    if (pod) p.set("pod", pod);
    return p.toString();
  }

  async function refresh() {
    try {
      const [g, f] = await Promise.all([
        fetch("/api/graph").then((r) => r.json()),
        fetch("/api/flows?" + params()).then((r) => (r.ok ? r.json() : [])),
      ]);
      drawMap(g);
      flows = f;
      drawTable();
    } catch (e) {
      document.getElementById("status").textContent = "daemon unreachable: " + e;
    }
  }

  drawMap(initial.graph || {});
  drawTable();
  for (const id of ["f-namespace", "f-verdict", "f-pod"]) document.getElementById(id).addEventListener("change", refresh);
  document.getElementById("f-text").addEventListener("input", drawTable);
  setInterval(refresh, 2000);
})();
