// An LR-finder job: the loss against the learning rate (log scale), drawn live while the sweep runs and
// with each suggestion marked once it ends, and "train with this LR", which opens the training form
// with lr "auto" and this job.

import { api, blobUrl } from "./api.js";
import { chartTools } from "./chart_tools.js";
import { lineChart } from "./charts.js";
import { clear, ENDED, h, lrText, openLightbox } from "./dom.js";

// The colours of lr_finder.png (ml/plots.py plot_lr_finder, matplotlib's default cycle): the loss and
// smoothed loss "C0", the trend black, suggestion i "C{i + 1}" in the API's order (steepest, valley,
// minimum_div10). tests/ml/test_lr_finder_colors.py holds these equal to the PNG's.
export const PNG_COLORS = {
  loss: "#1f77b4",
  trend: "#000000",
  steepest: "#ff7f0e",
  valley: "#2ca02c",
  minimum_div10: "#d62728",
};
const RAW_LOSS = "rgba(31, 119, 180, 0.25)"; // the PNG's loss: C0 at alpha 0.25
const STOP_COLOR = "#6b7280";

/** lr_finder.png's y range (plot_lr_finder): the smoothed and trend losses' span padded by a tenth of
 * it on each side, so the raw loss's divergence spike does not flatten the useful curve. */
export function lossRange(smoothed, trend) {
  const values = [...smoothed, ...trend].filter((v) => v !== null && Number.isFinite(v));
  if (!values.length) return null;
  const low = Math.min(...values), high = Math.max(...values);
  const span = high - low || Math.abs(high) || 1;
  return [low - 0.1 * span, high + 0.1 * span];
}

function suggestionTable(job, metrics) {
  const rows = Object.entries(metrics.suggestions || {}).map(([name, value]) =>
    h("tr", {}, h("td", {}, h("span", { class: "swatch", style: `background:${PNG_COLORS[name] || STOP_COLOR}` }), ` ${name}`),
      h("td", { class: "num mono" }, lrText(value)),
      h("td", {}, value ? h("a", { class: "button small", href: `#/new?kind=train&from=${job.id}&lr=${value}` },
        `train with ${lrText(value)}`) : "—")));
  return h("table", { class: "suggestions" }, h("thead", {}, h("tr", {}, h("th", {}, "suggestion"), h("th", {}, "lr"), h("th", {}, ""))),
    h("tbody", {}, rows));
}

/** How far the sweep went: "all 100 iterations", or where and why it stopped early. */
function extentText(job, metrics) {
  const planned = job.params.num_iter;
  const done = metrics.lrs.length;
  if (metrics.stop_reason && metrics.stop_reason !== "completed") {
    return `stopped at iteration ${done} of ${planned} (${metrics.stop_reason})`;
  }
  return `all ${done} iterations`;
}

function noSuggestionNote(metrics) {
  if (metrics.suggested_lr || metrics.status !== "succeeded") return null;
  if (Object.values(metrics.suggestions || {}).every((v) => !v)) {
    return h("p", { class: "note", id: "no-suggestion" }, "No suggestion: the loss never fell clearly below where it ",
      "started. Run the range test again from a lower start_lr, or give the learning rate yourself.");
  }
  return h("p", { class: "note", id: "no-suggestion" }, "No steepest suggestion (the descent is too short to measure ",
    'a slope on), so lr "auto" cannot use this job: train with one of the other suggestions below.');
}

/** The chart of the curve: the PNG's series and colours and its y range; `update` takes new metrics. */
function curveChart(chartBox, metrics, markers) {
  let latest = metrics, chart = null, withOwnTrend = null;
  const trendOf = (m) => (m.trend_losses?.length ? m.trend_losses : m.smoothed_losses);
  const ownTrend = (m) => trendOf(m).some((value, i) => value !== m.smoothed_losses[i]);
  const yRange = (u, min, max) => {
    const range = lossRange(latest.smoothed_losses, trendOf(latest)) || [min, max];
    chartBox.dataset.yMin = String(range[0]);
    chartBox.dataset.yMax = String(range[1]);
    return range;
  };
  const draw = (m) => {
    latest = m;
    if (chart && withOwnTrend === ownTrend(m)) return chart.update([m.lrs, m.losses, m.smoothed_losses, ...(withOwnTrend ? [trendOf(m)] : [])]);
    chart?.destroy(); // the trend became distinct from the smoothed loss: one more series
    withOwnTrend = ownTrend(m);
    const series = [{ label: "loss", color: RAW_LOSS, width: 1 }, { label: "smoothed", color: PNG_COLORS.loss }];
    if (withOwnTrend) series.push({ label: "trend (suggestions)", color: PNG_COLORS.trend }); // what they are read from
    chart = lineChart(chartBox, series, [m.lrs, m.losses, m.smoothed_losses, ...(withOwnTrend ? [trendOf(m)] : [])],
      { xLabel: "learning rate", yLabel: "loss", logX: true, markers, height: 300, yRange });
  };
  draw(metrics);
  return {
    update: draw,
    chart: () => chart,
    destroy() {
      chart?.destroy();
      chart = null;
    },
  };
}

async function showCurve(box, job, metrics, page) {
  const chartBox = h("div", { class: "chart", id: "chart-lr-finder" });
  const markers = Object.entries(metrics.suggestions || {}).filter(([, v]) => v)
    .map(([name, value]) => ({ x: value, label: `${name} ${lrText(value)}`, color: PNG_COLORS[name] || STOP_COLOR }));
  if (metrics.diverged_at_lr) markers.push({ x: metrics.diverged_at_lr, label: "diverged", color: STOP_COLOR });
  else if (metrics.stopped_at_lr) markers.push({ x: metrics.stopped_at_lr, label: `stopped: ${metrics.stop_reason}`, color: STOP_COLOR });
  const src = await blobUrl(`/jobs/${job.id}/artifacts/lr_finder.png`).catch(() => null);
  clear(box,
    h("section", { class: "card" },
      h("div", { class: "section-head" }, h("h2", {}, "Loss against learning rate"), h("span", { class: "spacer" }),
        metrics.suggested_lr ? h("a", { class: "button primary", id: "train-with-lr",
          href: `#/new?kind=train&lr_finder_job=${job.id}` }, `Train with this LR (${lrText(metrics.suggested_lr)})`) : null),
      h("p", { class: "muted", id: "lr-extent" }, `suggested lr ${lrText(metrics.suggested_lr)} · ${extentText(job, metrics)}`),
      noSuggestionNote(metrics),
      h("div", { class: "chart-panel" }, chartTools(() => curve.chart(), "lr_finder").element, chartBox),
      suggestionTable(job, metrics)),
    src ? h("details", { class: "card" }, h("summary", {}, "The plot as rendered by the worker (lr_finder.png)"),
      h("img", { src, class: "artifact", alt: "lr_finder.png", onclick: () => openLightbox(src, "lr_finder.png") })) : null);
  const curve = curveChart(chartBox, metrics, markers);
  page.onLeave(curve.destroy);
}

/** While the sweep runs: the curve so far (the API's thinned copy), no suggestion yet. */
function liveView(box) {
  const chartBox = h("div", { class: "chart", id: "chart-lr-finder" });
  const note = h("p", { class: "muted", id: "lr-extent" });
  let chart = null;
  clear(box, h("section", { class: "card", id: "lr-live" }, h("h2", {}, "Loss against learning rate (so far)"), note, chartBox));
  return {
    update(job, metrics) {
      const { step = 0, steps = job.params.num_iter } = job.progress || {};
      note.textContent = metrics.lrs.length
        ? `iteration ${step} of ${steps}: the suggestions are marked when the sweep ends`
        : "The curve is drawn here as the sweep runs.";
      if (!metrics.lrs.length) return;
      if (chart) chart.update(metrics);
      else chart = curveChart(chartBox, metrics, []);
    },
    destroy: () => chart?.destroy(),
  };
}

export function mount(box, job, page) {
  let live = null;
  page.onLeave(() => live?.destroy());
  const waiting = (text) => clear(box, h("section", { class: "card" }, h("p", { class: "muted" }, text)));
  waiting("The curve is drawn here as the sweep runs.");
  return {
    async refresh(current) {
      if (current.status === "queued") {
        waiting("Waiting for a worker: the curve is drawn here as the sweep runs.");
        return false;
      }
      const metrics = await api(`/jobs/${current.id}/metrics`);
      if (!ENDED.includes(metrics.status)) {
        live ??= liveView(box);
        live.update(current, metrics);
        return false;
      }
      live?.destroy();
      live = null;
      if (metrics.lrs.length) await showCurve(box, current, metrics, page);
      else waiting(`No curve: the range test ${metrics.status === "cancelled" ? "was cancelled" : "ended"} before its first iteration.`);
      return true;
    },
  };
}
