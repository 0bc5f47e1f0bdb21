// The dashboard: GET /report/online per box and per variant over time, drawn as SVG line charts (no build step,
// no library, nothing fetched from elsewhere: it works offline).
"use strict";

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const SVG = "http://www.w3.org/2000/svg";

function node(tag, attributes, parent) {
  const made = document.createElementNS(SVG, tag);
  Object.entries(attributes).forEach(([name, value]) => made.setAttribute(name, value));
  if (parent) parent.append(made);
  return made;
}

function draw(section, rows, key) {
  const svg = section.querySelector("svg");
  const legend = section.querySelector(".legend");
  svg.replaceChildren();
  legend.replaceChildren();
  const times = [...new Set(rows.map((r) => r.hour))].sort();
  const series = {};
  rows.forEach((r) => { (series[r[key] || "(none)"] ||= []).push(r); });
  const width = 600, height = 260, left = 48, bottom = 28, top = 10;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const top_ctr = Math.max(0.05, ...rows.map((r) => r.ctr_high));
  const x = (t) => left + (times.length < 2 ? (width - left) / 2 : (times.indexOf(t) / (times.length - 1)) * (width - left - 10));
  const y = (v) => height - bottom - (v / top_ctr) * (height - bottom - top);
  node("line", { x1: left, y1: y(0), x2: width, y2: y(0), stroke: "#999" }, svg);
  [0, top_ctr / 2, top_ctr].forEach((v) => {
    const label = node("text", { x: 4, y: y(v) + 4, "font-size": 11, fill: "#555" }, svg);
    label.textContent = v.toFixed(3);
  });
  if (times.length) {
    [times[0], times[times.length - 1]].forEach((t, i) => {
      const label = node("text", { x: i ? width - 110 : left, y: height - 8, "font-size": 11, fill: "#555" }, svg);
      label.textContent = t;
    });
  }
  Object.keys(series).sort().forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = series[name].sort((a, b) => (a.hour < b.hour ? -1 : 1));
    const band = points.map((p) => `${x(p.hour)},${y(p.ctr_high)}`).concat(
      points.slice().reverse().map((p) => `${x(p.hour)},${y(p.ctr_low)}`));
    node("polygon", { points: band.join(" "), fill: colour, opacity: 0.15, class: "interval" }, svg);
    node("polyline", {
      points: points.map((p) => `${x(p.hour)},${y(p.ctr)}`).join(" "),
      fill: "none", stroke: colour, "stroke-width": 2, class: "series", "data-name": name,
    }, svg);
    points.forEach((p) => {
      const dot = node("circle", { cx: x(p.hour), cy: y(p.ctr), r: 3, fill: colour }, svg);
      node("title", {}, dot).textContent = `${name} ${p.hour}: ${p.clicked_lists}/${p.lists} lists clicked`;
    });
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    item.append(swatch, `${name}`);
    legend.append(item);
  });
}

function totals(report) {
  const table = document.getElementById("totals");
  table.replaceChildren();
  const head = table.insertRow();
  ["box", "lists", "clicked lists", "clicks", "CTR", "95% interval", "articles shown"].forEach((h) => {
    const cell = document.createElement("th");
    cell.textContent = h;
    head.append(cell);
  });
  report.rows.forEach((r) => {
    const row = table.insertRow();
    [r.box, r.lists, r.clicked_lists, r.clicks, r.ctr.toFixed(4),
      `${r.ctr_low.toFixed(4)} .. ${r.ctr_high.toFixed(4)}`, r.articles_shown].forEach((v) => {
      row.insertCell().textContent = String(v);
    });
  });
}

async function get(query) {
  const response = await fetch(`/report/online?${query}`);
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

async function load() {
  const since = document.getElementById("since").value;
  try {
    const [boxes, variants, overall] = await Promise.all([
      get(`since_days=${since}&by=box&by=hour`),
      get(`since_days=${since}&by=variant&by=hour`),
      get(`since_days=${since}&by=box`),
    ]);
    draw(document.getElementById("by-box"), boxes.rows, "box");
    draw(document.getElementById("by-variant"), variants.rows, "variant");
    totals(overall);
    document.body.dataset.loaded = String(Date.now());
  } catch (error) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = "Could not load the figures: " + error.message;
  }
}

document.getElementById("since").addEventListener("change", load);
load();
