// Compare training jobs, each by its name: their curves overlaid (the LR per step too), the epoch curves
// with one cursor on one x axis (epoch or training time), each chart with log y (on at first for a loss
// that spans a wide range), CSV and PNG; per-class accuracy side by side, a
// parallel-coordinates view of settings against accuracy (three or more runs), and their specs side by
// side, differences highlighted.

import { api, artifactJson } from "./api.js";
import { chartTools } from "./chart_tools.js";
import { COLORS, lineChart } from "./charts.js";
import { epochEnds, spansWide, X_AXES, xAxisControl } from "./curves.js";
import { clear, duration, h, pct, seconds, statusBadge } from "./dom.js";
import { displayName, tagChips } from "./jobs.js";
import { overlaid, predictionText } from "./probes.js";

const CURVES = [
  ["test_acc", "Test accuracy", true], ["train_acc", "Train accuracy", true],
  ["test_loss", "Test loss", false], ["train_loss", "Train loss", false],
];
const short = (v) => String(Number(v.toPrecision(3))); // 0.001, not 0.00100
// The parallel-coordinates axes: [label, value of (job, metrics), log scale, format].
const AXES = [
  ["lr", (job) => (typeof job.lr === "number" ? job.lr : job.params.optimizer?.lr), true, short],
  ["epochs", (job) => job.params.epochs, false, String],
  ["batch size", (job) => job.params.batch_size, false, String],
  ["width", (job) => job.params.model?.width, false, String],
  ["weight decay", (job) => job.params.optimizer?.weight_decay, false, short],
  ["label smoothing", (job) => job.params.label_smoothing, false, String],
  ["best test acc", (job, m) => m.best?.test_acc, false, (v) => pct(v, 1)],
  ["last test acc", (job, m) => m.last?.test_acc, false, (v) => pct(v, 1)],
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
      h("span", { class: job.name ? "" : "mono" }, ` ${displayName(job)} `), statusBadge(job.status),
      ` ${job.params.dataset.name} · ${job.params.model?.name ?? "resnet18"} · ${job.params.epochs} epochs`,
      job.best ? ` · ${pct(job.best.test_acc)}` : "", job.tags?.length ? [" ", tagChips(job.tags)] : null)))),
    go);
}

function swatch(color) {
  return h("span", { class: "swatch", style: `background:${color}` });
}

function runHeader(job, color) {
  return h("th", { title: job.id, class: "run-col" }, swatch(color), ` ${displayName(job)}`);
}

function specTable(jobs, colors) {
  const flat = jobs.map((job) => flatten(job.params));
  const keys = [...new Set(flat.flatMap(Object.keys))].sort();
  const rows = keys.map((key) => {
    const values = flat.map((f) => f[key] ?? "—");
    const differs = new Set(values).size > 1;
    return h("tr", { class: differs ? "diff" : "same" }, h("th", { class: "mono" }, key),
      values.map((v) => h("td", { class: "mono" }, v)));
  });
  const table = h("table", { class: "spec-compare" },
    h("thead", {}, h("tr", {}, h("th", {}, "field"), jobs.map((job, i) => runHeader(job, colors[i])))),
    h("tbody", {}, rows));
  const onlyDiff = h("input", { type: "checkbox", id: "only-diff",
    onchange: (e) => table.classList.toggle("only-diff", e.target.checked) });
  return h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Specs"),
    h("span", { class: "spacer" }), h("label", {}, onlyDiff, " only the differences")),
    h("p", { class: "muted" }, `${rows.filter((r) => r.classList.contains("diff")).length} of ${keys.length} fields differ (highlighted).`),
    h("div", { class: "table-wrap" }, table));
}

function summaryTable(jobs, metrics, colors) {
  return h("section", { class: "card" }, h("div", { class: "table-wrap" }, h("table", { id: "compare-summary" },
    h("thead", {}, h("tr", {}, ["", "run", "tags", "status", "last test acc", "best test acc", "best chosen on",
      "test-time flip", "epochs", "duration"].map((c) => h("th", {}, c)))),
    h("tbody", {}, jobs.map((job, i) => h("tr", {},
      h("td", {}, swatch(colors[i])),
      h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: job.name ? "" : "mono", title: job.id }, displayName(job))),
      h("td", {}, tagChips(job.tags)),
      h("td", {}, statusBadge(job.status)),
      h("td", { class: "num" }, pct(metrics[i].last?.test_acc)),
      h("td", { class: "num" }, pct(metrics[i].best?.test_acc)),
      h("td", {}, metrics[i].best ? metrics[i].selected_on : "—"),
      h("td", {}, metrics[i].test_time_flip ? "yes" : "no"),
      h("td", { class: "num" }, String((metrics[i].epochs || []).length)),
      h("td", { class: "num" }, seconds(duration(job)))))))));
}

/** Per-class test accuracy, a column per run; each class's best run in bold. */
function perClassTable(jobs, metrics, colors) {
  const perClass = metrics.map((m) => m.per_class_accuracy || null);
  const classes = [...new Set(perClass.flatMap((p) => Object.keys(p || {})))];
  if (!classes.length) {
    return h("section", { class: "card" }, h("h2", {}, "Per-class accuracy"),
      h("p", { class: "muted" }, "None of these runs has finished with per-class accuracy yet."));
  }
  const rows = classes.map((name) => {
    const values = perClass.map((p) => p?.[name]);
    const top = Math.max(...values.filter((v) => typeof v === "number"));
    return h("tr", {}, h("th", {}, name), values.map((v) =>
      h("td", { class: v === top && values.filter((x) => x === top).length < values.length ? "num best-run" : "num" }, pct(v, 1))));
  });
  return h("section", { class: "card" }, h("h2", {}, "Per-class accuracy"),
    h("p", { class: "muted" }, "Test accuracy of each class once a run has finished; the best run of each class in bold."),
    h("div", { class: "table-wrap" }, h("table", { id: "per-class", class: "per-class" },
      h("thead", {}, h("tr", {}, h("th", {}, "class"), jobs.map((job, i) => runHeader(job, colors[i])))),
      h("tbody", {}, rows))));
}

/** Where each run sits on each axis, 0 (bottom) to 1 (top); null where a run has no value. */
export function axisPositions(values, log) {
  const scaled = values.map((v) => (typeof v === "number" && (!log || v > 0) ? (log ? Math.log10(v) : v) : null));
  const known = scaled.filter((v) => v !== null);
  const low = Math.min(...known), high = Math.max(...known);
  return scaled.map((v) => (v === null ? null : high > low ? (v - low) / (high - low) : 0.5));
}

function drawParallel(canvas, jobs, metrics, colors) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(canvas.parentElement.clientWidth, 480), height = 300;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const left = 50, right = width - 50, top = 34, bottom = height - 40;
  const x = (i) => left + (i * (right - left)) / (AXES.length - 1);
  const y = (p) => bottom - p * (bottom - top);
  const columns = AXES.map(([, read, log]) => {
    const values = jobs.map((job, r) => read(job, metrics[r]));
    return { values, positions: axisPositions(values, log) };
  });
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  AXES.forEach(([label, , , format], i) => {
    ctx.strokeStyle = "#9ca3af";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x(i), top);
    ctx.lineTo(x(i), bottom);
    ctx.stroke();
    ctx.fillStyle = "#111827";
    ctx.fillText(label, x(i), top - 16);
    const known = columns[i].values.map((v, r) => [v, columns[i].positions[r]]).filter(([, p]) => p !== null);
    const lowest = known.reduce((a, b) => (b[1] < a[1] ? b : a), known[0]);
    const highest = known.reduce((a, b) => (b[1] > a[1] ? b : a), known[0]);
    ctx.fillStyle = "#6b7280";
    if (highest) ctx.fillText(format(highest[0]), x(i), top - 3);
    if (lowest && lowest !== highest) ctx.fillText(format(lowest[0]), x(i), bottom + 15);
  });
  jobs.forEach((job, r) => {
    ctx.strokeStyle = colors[r];
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    let drawing = false;
    columns.forEach(({ positions }, i) => {
      if (positions[r] === null) return void (drawing = false); // a gap where the run has no value
      drawing ? ctx.lineTo(x(i), y(positions[r])) : ctx.moveTo(x(i), y(positions[r]));
      drawing = true;
    });
    ctx.stroke();
  });
}

function parallelSection(jobs, metrics, colors, page) {
  const canvas = h("canvas", { id: "parallel-coords", role: "img",
    "aria-label": `parallel coordinates of ${jobs.length} runs: ${AXES.map(([label]) => label).join(", ")}` });
  const legend = h("ul", { class: "legend", id: "parallel-legend" },
    jobs.map((job, i) => h("li", {}, swatch(colors[i]), ` ${displayName(job)}`)));
  const section = h("section", { class: "card" }, h("h2", {}, "Settings against accuracy"),
    h("p", { class: "muted" }, "One line per run across its settings and accuracies; each axis spans the runs' values (lr on a log scale)."),
    h("div", { class: "parallel" }, canvas), legend);
  requestAnimationFrame(() => page.alive && drawParallel(canvas, jobs, metrics, colors));
  const observer = new ResizeObserver(() => page.alive && drawParallel(canvas, jobs, metrics, colors));
  requestAnimationFrame(() => observer.observe(section));
  page.onLeave(() => observer.disconnect());
  return section;
}

/** Jobs that probe the same test images: one dataset (subsets included), seed and probe_indices. */
export function shareProbes(jobs) {
  const key = (job) => JSON.stringify([flatten(job.params.dataset), job.params.seed ?? 0, job.params.probe_indices ?? null]);
  return jobs.every((job) => key(job) === key(jobs[0]));
}

/** The same probe image side by side, a column per run, each at its latest epoch; null without probes. */
async function probesSection(jobs, colors) {
  if (!shareProbes(jobs)) return null;
  let answers;
  try {
    answers = await Promise.all(jobs.map((job) => api(`/jobs/${job.id}/explanations`)));
  } catch (error) {
    if (error.status === 404) return null; // a run before its first epoch, or from before probes were recorded
    throw error;
  }
  return h("section", { class: "card", id: "compare-probes" }, h("h2", {}, "The same probe images"),
    h("p", { class: "muted" }, "These runs share their dataset and seed, so they probe the same test images: "
      + "each run's GradCAM map of its predicted class at its latest epoch."),
    h("div", { class: "probe-strips" }, answers[0].probes.map((probe, i) => h("div", { class: "probe-compare", dataset: { index: probe.index } },
      h("figure", {}, h("span", { class: "probe-stack", style: "width:96px;height:96px" },
        h("img", { src: probe.image, alt: `test image ${probe.index}`, class: "pixelated" })),
      h("figcaption", {}, `true: ${probe.true_class}`)),
      answers.map((answer, j) => h("figure", { dataset: { job: jobs[j].id } },
        overlaid(answer.probes[i], 96, `${displayName(jobs[j])} at epoch ${answer.epoch}`),
        h("figcaption", {}, swatch(colors[j]), ` epoch ${answer.epoch}`, h("br"), predictionText(answer.probes[i]))))))));
}

/** [xs, a column per run] of the epoch records' `key`: by epoch, or at each epoch's end in training seconds
 * (the x values of all runs, each run's column empty where another run's epoch ended). */
export function epochSeries(metrics, key, mode) {
  const places = metrics.map((m) => (mode === "time" ? epochEnds(m.epochs || []) : (m.epochs || []).map((r) => r.epoch)));
  const xs = [...new Set(places.flat().filter((x) => x != null))].sort((a, b) => a - b);
  return [xs, ...metrics.map((m, i) => {
    const at = new Map(places[i].map((x, k) => [x, m.epochs[k][key] ?? null]));
    return xs.map((x) => at.get(x) ?? null);
  })];
}

async function lrSteps(job) {
  try {
    return await artifactJson(`/jobs/${job.id}/artifacts/lr_steps.json`);
  } catch (error) {
    if (error.status === 404) return null; // not written yet, or a job from before it was recorded
    throw error;
  }
}

export async function render(root, { page, query }) {
  const ids = (query.ids || "").split(",").filter(Boolean);
  if (ids.length < 2) return picker(root);
  const jobs = await Promise.all(ids.map((id) => api(`/jobs/${id}`)));
  const metrics = await Promise.all(ids.map((id) => api(`/jobs/${id}/metrics`)));
  const steps = await Promise.all(jobs.map(lrSteps));
  const colors = jobs.map((_, i) => COLORS[i % COLORS.length]);
  const series = jobs.map((job, i) => ({ label: displayName(job), color: colors[i] }));
  const chartBoxes = CURVES.map(([key]) => h("div", { class: "chart", id: `compare-${key}` }));
  const lrBox = h("div", { class: "chart", id: "compare-lr-steps" });
  const charts = new Map(), tools = new Map(); // box id -> chart, its tools
  const panel = (box, log) => {
    tools.set(box.id, chartTools(() => charts.get(box.id), box.id.replace(/-/g, "_"), { log }));
    return h("div", { class: "chart-panel" }, tools.get(box.id).element, box);
  };
  const haveSteps = steps.some((s) => s?.length);
  const axis = xAxisControl((mode) => {
    axis.press(mode);
    CURVES.forEach(([key], index) => {
      const chart = charts.get(chartBoxes[index].id);
      chart.update(epochSeries(metrics, key, mode));
      chart.setOptions({ xLabel: X_AXES[mode].label, integerX: X_AXES[mode].integer });
    });
  }, { modes: ["epoch", "time"], id: "compare-x-axis" });
  // training time once every run has timed epochs: each epoch at the end of its training seconds
  const timed = metrics.every((m) => (m.epochs || []).length && epochEnds(m.epochs).pop() != null);
  axis.buttons.find((b) => b.dataset.mode === "time").disabled = !timed;
  clear(root, h("h1", {}, `Compare ${jobs.length} runs`),
    summaryTable(jobs, metrics, colors),
    h("section", { class: "card" }, h("div", { class: "section-head" }, h("h2", {}, "Curves"),
      h("span", { class: "spacer" }), axis.element), h("div", { class: "charts" },
      chartBoxes.map((box, i) => panel(box, !CURVES[i][2])), haveSteps ? panel(lrBox, true) : null)),
    perClassTable(jobs, metrics, colors),
    await probesSection(jobs, colors),
    jobs.length >= 3 ? parallelSection(jobs, metrics, colors, page) : null,
    specTable(jobs, colors));
  CURVES.forEach(([key, title, percent], index) => {
    const data = epochSeries(metrics, key, "epoch");
    const chart = lineChart(chartBoxes[index], series, data, { title, xLabel: X_AXES.epoch.label, percentY: percent,
      integerX: true, sync: "compare", logY: !percent && spansWide(data.slice(1).flat()) }); // a loss spike: log y
    charts.set(chartBoxes[index].id, chart);
    tools.get(chartBoxes[index].id).sync();
    page.onLeave(chart.destroy);
  });
  if (haveSteps) {
    const longest = Math.max(...steps.map((s) => s?.length || 0));
    const stepXs = Array.from({ length: longest }, (_, i) => i + 1);
    const data = [stepXs, ...steps.map((s) => stepXs.map((_, i) => s?.[i] ?? null))];
    const chart = lineChart(lrBox, series, data, { title: "Learning rate per step", xLabel: "step", integerX: true, points: false });
    charts.set(lrBox.id, chart);
    page.onLeave(chart.destroy);
  }
}
