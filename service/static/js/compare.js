// Compare training jobs: their curves overlaid and their specs side by side, differences highlighted.

import { api } from "./api.js";
import { COLORS, lineChart } from "./charts.js";
import { clear, duration, h, pct, seconds, statusBadge } from "./dom.js";

const CURVES = [
  ["test_acc", "Test accuracy", true], ["train_acc", "Train accuracy", true],
  ["test_loss", "Test loss", false], ["train_loss", "Train loss", false],
];

/** {"optimizer.lr": 0.05, ...}: nested objects flattened to dotted keys (lists stay whole). */
export function flatten(value, prefix = "", out = {}) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else out[prefix] = JSON.stringify(value);
  return out;
}

async function picker(root) {
  const { jobs } = await api("/jobs?kind=train&limit=100");
  const chosen = new Set();
  const go = h("a", { class: "button primary", href: "#/compare", "aria-disabled": "true", id: "compare-go" }, "Compare");
  const toggle = (id, on) => {
    on ? chosen.add(id) : chosen.delete(id);
    go.href = `#/compare?ids=${[...chosen].join(",")}`;
    go.setAttribute("aria-disabled", String(chosen.size < 2));
  };
  clear(root, h("h1", {}, "Compare"), h("p", {}, "Pick two or more training jobs."),
    h("ul", { class: "pick" }, jobs.map((job) => h("li", {}, h("label", {},
      h("input", { type: "checkbox", onchange: (e) => toggle(job.id, e.target.checked) }),
      h("span", { class: "mono" }, ` ${job.id.slice(0, 8)} `), statusBadge(job.status),
      ` ${job.params.dataset.name} · ${job.params.model?.name ?? "resnet18"} · ${job.params.epochs} epochs`,
      job.best ? ` · ${pct(job.best.test_acc)}` : "")))),
    go);
}

function specTable(jobs) {
  const flat = jobs.map((job) => flatten(job.params));
  const keys = [...new Set(flat.flatMap(Object.keys))].sort();
  const rows = keys.map((key) => {
    const values = flat.map((f) => f[key] ?? "—");
    const differs = new Set(values).size > 1;
    return h("tr", { class: differs ? "diff" : "same" }, h("th", { class: "mono" }, key),
      values.map((v) => h("td", { class: "mono" }, v)));
  });
  const table = h("table", { class: "spec-compare" },
    h("thead", {}, h("tr", {}, h("th", {}, "field"), jobs.map((j, i) =>
      h("th", {}, h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), ` ${j.id.slice(0, 8)}`)))),
    h("tbody", {}, rows));
  const onlyDiff = h("input", { type: "checkbox", id: "only-diff",
    onchange: (e) => table.classList.toggle("only-diff", e.target.checked) });
  return h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Specs"),
    h("span", { class: "spacer" }), h("label", {}, onlyDiff, " only the differences")),
    h("p", { class: "muted" }, `${rows.filter((r) => r.classList.contains("diff")).length} of ${keys.length} fields differ (highlighted).`),
    h("div", { class: "table-wrap" }, table));
}

export async function render(root, { page, query }) {
  const ids = (query.ids || "").split(",").filter(Boolean);
  if (ids.length < 2) return picker(root);
  const jobs = await Promise.all(ids.map((id) => api(`/jobs/${id}`)));
  const metrics = await Promise.all(ids.map((id) => api(`/jobs/${id}/metrics`)));
  const maxEpoch = Math.max(1, ...metrics.map((m) => (m.epochs || []).length ? m.epochs[m.epochs.length - 1].epoch : 0));
  const xs = Array.from({ length: maxEpoch }, (_, i) => i + 1);
  const series = jobs.map((job, i) => ({ label: job.id.slice(0, 8), color: COLORS[i % COLORS.length] }));
  const chartBoxes = CURVES.map(([key]) => h("div", { class: "chart", id: `compare-${key}` }));
  clear(root, h("h1", {}, `Compare ${jobs.length} jobs`),
    h("section", { class: "card" }, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["", "job", "status", "last test acc", "best test acc", "best chosen on",
        "test-time flip", "epochs", "duration"].map((c) => h("th", {}, c)))),
      h("tbody", {}, jobs.map((job, i) => h("tr", {},
        h("td", {}, h("span", { class: "swatch", style: `background:${series[i].color}` })),
        h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 8))),
        h("td", {}, statusBadge(job.status)),
        h("td", { class: "num" }, pct(metrics[i].last?.test_acc)),
        h("td", { class: "num" }, pct(metrics[i].best?.test_acc)),
        h("td", {}, metrics[i].best ? metrics[i].selected_on : "—"),
        h("td", {}, metrics[i].test_time_flip ? "yes" : "no"),
        h("td", { class: "num" }, String((metrics[i].epochs || []).length)),
        h("td", { class: "num" }, seconds(duration(job))))))))),
    h("section", { class: "card" }, h("h2", {}, "Curves"), h("div", { class: "charts" }, chartBoxes)),
    specTable(jobs));
  CURVES.forEach(([key, title, percent], index) => {
    const data = [xs, ...metrics.map((m) => xs.map((epoch) => (m.epochs || []).find((r) => r.epoch === epoch)?.[key] ?? null))];
    const chart = lineChart(chartBoxes[index], series, data, { title, xLabel: "epoch", percentY: percent, integerX: true });
    page.onLeave(chart.destroy);
  });
}
