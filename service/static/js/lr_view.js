// An LR-finder job: the loss against the learning rate (log scale) with each suggestion marked, and
// "train with this LR", which opens the training form with lr "auto" and this job.

import { api, blobUrl } from "./api.js";
import { lineChart } from "./charts.js";
import { clear, ENDED, h, lrText, openLightbox } from "./dom.js";

const MARKS = { steepest: "#dc2626", valley: "#16a34a", minimum_div10: "#d97706" };

function suggestionTable(job, metrics) {
  const rows = Object.entries(metrics.suggestions || {}).map(([name, value]) =>
    h("tr", {}, h("td", {}, h("span", { class: "swatch", style: `background:${MARKS[name] || "#666"}` }), ` ${name}`),
      h("td", { class: "num mono" }, lrText(value)),
      h("td", {}, value ? h("a", { class: "button small", href: `#/new?kind=train&from=${job.id}&lr=${value}` },
        `train with ${lrText(value)}`) : "—")));
  return h("table", { class: "suggestions" }, h("thead", {}, h("tr", {}, h("th", {}, "suggestion"), h("th", {}, "lr"), h("th", {}, ""))),
    h("tbody", {}, rows));
}

async function showCurve(box, job, metrics, page) {
  const chartBox = h("div", { class: "chart", id: "chart-lr-finder" });
  const markers = Object.entries(metrics.suggestions || {}).filter(([, v]) => v)
    .map(([name, value]) => ({ x: value, label: `${name} ${lrText(value)}`, color: MARKS[name] || "#666" }));
  if (metrics.diverged_at_lr) markers.push({ x: metrics.diverged_at_lr, label: "diverged", color: "#6b7280" });
  else if (metrics.stopped_at_lr) markers.push({ x: metrics.stopped_at_lr, label: `stopped: ${metrics.stop_reason}`, color: "#6b7280" });
  const src = await blobUrl(`/jobs/${job.id}/artifacts/lr_finder.png`).catch(() => null);
  clear(box,
    h("section", { class: "card" },
      h("div", { class: "section-head" }, h("h2", {}, "Loss against learning rate"), h("span", { class: "spacer" }),
        metrics.suggested_lr ? h("a", { class: "button primary", id: "train-with-lr",
          href: `#/new?kind=train&lr_finder_job=${job.id}` }, `Train with this LR (${lrText(metrics.suggested_lr)})`) : null),
      h("p", { class: "muted" }, `suggested lr ${lrText(metrics.suggested_lr)}`, metrics.stop_reason ? ` · stopped: ${metrics.stop_reason}` : "",
        ` · ${metrics.lrs.length} iterations`),
      metrics.suggested_lr || metrics.status !== "succeeded" ? null : h("p", { class: "note", id: "no-suggestion" },
        "No suggestion: the loss never fell clearly below where it started. Run the range test again from a lower start_lr, or give the learning rate yourself."),
      chartBox,
      suggestionTable(job, metrics)),
    src ? h("details", { class: "card" }, h("summary", {}, "The plot as rendered by the worker (lr_finder.png)"),
      h("img", { src, class: "artifact", alt: "lr_finder.png", onclick: () => openLightbox(src, "lr_finder.png") })) : null);
  const series = [{ label: "loss", color: "#9ca3af", width: 1 }, { label: "smoothed" }];
  const data = [metrics.lrs, metrics.losses, metrics.smoothed_losses];
  const trend = metrics.trend_losses || [];
  if (trend.length && trend.some((value, i) => value !== metrics.smoothed_losses[i])) {
    series.push({ label: "trend (suggestions)", color: "#111827" }); // what the suggestions were read from
    data.push(trend);
  }
  const chart = lineChart(chartBox, series, data, { xLabel: "learning rate", logX: true, markers, height: 300 });
  page.onLeave(chart.destroy);
}

export function mount(box, job, page) {
  clear(box, h("section", { class: "card" }, h("p", { class: "muted" }, "The curve appears when the range test ends.")));
  return {
    async refresh(current) {
      if (!ENDED.includes(current.status)) return false;
      const metrics = await api(`/jobs/${current.id}/metrics`);
      if (!ENDED.includes(metrics.status)) return false;
      if (metrics.lrs.length) await showCurve(box, current, metrics, page);
      else clear(box, h("section", { class: "card" }, h("p", { class: "muted" }, "No curve: the range test left no points.")));
      return true;
    },
  };
}
