// Shared by both explorer pages (inlined by tracinwe.web.app._page): colours, number format, DOM building.
// Every string from the server goes into the page through textContent or an attribute, never as HTML.
const POS = [33, 102, 172], NEG = [178, 24, 43];

function colour(value, scale) {            // mirrors tracinwe.report.view.colour
  if (scale <= 0 || value === 0) return "rgba(255,255,255,0)";
  const strength = Math.min(Math.abs(value) / scale, 1);
  const c = value > 0 ? POS : NEG;
  return `rgba(${c[0]},${c[1]},${c[2]},${(0.06 + 0.54 * strength).toFixed(3)})`;
}

function fmt(v) {                          // like Python's f"{v:+.3g}"
  if (v === 0) return "+0";
  const e = Math.floor(Math.log10(Math.abs(v)));
  let s;
  if (e < -4 || e >= 3) {
    s = v.toExponential(2).replace(/\.?0+e/, "e").replace(/e([+-])(\d)$/, "e$10$2");
  } else {
    s = String(parseFloat(v.toPrecision(3)));
  }
  return (v > 0 ? "+" : "") + s;
}

function el(tag, attrs, ...children) {     // DOM building with textContent only: user text is never parsed as HTML
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function segmentsNode(segments, scale) {
  const box = el("div", {class: "ntext"});
  for (const s of segments) {
    if (s.contribution === null) { box.append(document.createTextNode(s.text)); continue; }
    box.append(el("mark", {class: "w", "data-contribution": String(s.contribution),
      title: `${s.tokens.join(" ")}: ${fmt(s.contribution)}`, style: `background:${colour(s.contribution, scale)}`,
      text: s.text}));
  }
  return box;
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({detail: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

function showError(where, message) {
  document.getElementById(where).replaceChildren(el("p", {class: "error", text: message}));
}

function bindSuspicious(columns) {         // "show the top 20" by self-influence; columns: [[header, row => text], ...]
  document.getElementById("load-suspicious").addEventListener("click", async () => {
    try {
      const rows = await call("/api/suspicious?k=20");
      const body = el("tbody", {}, ...rows.map((r, i) => el("tr", {"data-row": String(r.row), "data-id": r.id},
        el("td", {class: "num", text: String(i + 1)}), el("td", {class: "num si", text: r.self_influence.toPrecision(4)}),
        ...columns.map(([, cell]) => el("td", {text: cell(r)})), el("td", {class: "num", text: r.id}))));
      const headers = ["#", "self-influence", ...columns.map(([header]) => header), "id"];
      const head = el("thead", {}, el("tr", {}, ...headers.map(t => el("th", {text: t}))));
      document.getElementById("suspicious").replaceChildren(el("table", {class: "susp"}, head, body));
    } catch (err) {
      showError("suspicious", err.message);
    }
  });
}
