// What a person does with a chart besides reading it: a log or linear y axis, and the chart as CSV (the
// series it draws, at full precision) or as PNG (the plot with its title and legend on white).

import { COLORS } from "./charts.js";
import { h, saveBlob } from "./dom.js";

function csvCell(value) {
  if (value === null || value === undefined) return "";
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The chart's data as CSV: a header of the x label and the series' labels, then a row per x. */
export function chartCsv(chart) {
  const [xs, ...ys] = chart.data();
  const header = [chart.options.xLabel || "x", ...chart.series.map((s) => s.label)];
  const rows = xs.map((x, i) => [x, ...ys.map((values) => values[i])]);
  return [header, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
}

const PNG_BAND = { title: 28, legend: 26 }; // CSS px above the plot (its title) and below it (its legend)

/** The plot's canvas on white, its title above and a legend of its series below, as a PNG blob. */
export function chartPng(chart) {
  const plotCanvas = chart.plot().ctx.canvas;
  const ratio = plotCanvas.width / chart.plot().width || 1;
  const canvas = h("canvas", { width: plotCanvas.width, height: plotCanvas.height + (PNG_BAND.title + PNG_BAND.legend) * ratio });
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#111827";
  ctx.textAlign = "center";
  ctx.font = `bold ${15 * ratio}px system-ui, sans-serif`;
  ctx.fillText(chart.options.title || "", canvas.width / 2, 20 * ratio);
  ctx.drawImage(plotCanvas, 0, PNG_BAND.title * ratio);
  ctx.font = `${12 * ratio}px system-ui, sans-serif`;
  ctx.textAlign = "left";
  let x = 12 * ratio;
  const y = canvas.height - 9 * ratio;
  chart.series.forEach((s, i) => {
    ctx.fillStyle = s.color || COLORS[i % COLORS.length];
    ctx.fillRect(x, y - 9 * ratio, 14 * ratio, 3 * ratio);
    ctx.fillStyle = "#111827";
    ctx.fillText(s.label, x + 18 * ratio, y);
    x += 18 * ratio + ctx.measureText(s.label).width + 16 * ratio;
  });
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/**
 * A row of tools above the chart `get()` returns (a chart can be replaced): "log y" where `log` is set
 * (its state: `chart.options.logY`; `onLog(on)` hears the person's choice), CSV and PNG saved as `<name>.csv`
 * and `<name>.png`. `sync()` shows a log axis set by the page.
 */
export function chartTools(get, name, { log = false, onLog = null } = {}) {
  const logButton = log ? h("button", { type: "button", class: "small", "aria-pressed": "false", title: "a log or a linear y axis",
    dataset: { tool: "log" }, onclick: () => setLog(!get().options.logY) }, "log y") : null;
  const setLog = (on) => {
    get().setOptions({ logY: on });
    sync();
    onLog?.(on);
  };
  const sync = () => logButton?.setAttribute("aria-pressed", String(Boolean(get().options.logY)));
  const element = h("div", { class: "chart-tools" }, logButton,
    h("button", { type: "button", class: "small", dataset: { tool: "csv" }, title: "the series drawn, as CSV",
      onclick: () => saveBlob(new Blob([chartCsv(get())], { type: "text/csv" }), `${name}.csv`) }, "CSV"),
    h("button", { type: "button", class: "small", dataset: { tool: "png" }, title: "the chart as an image",
      onclick: async () => saveBlob(await chartPng(get()), `${name}.png`) }, "PNG"));
  return { element, sync };
}
