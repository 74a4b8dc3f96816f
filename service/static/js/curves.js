// A training run's curves: accuracy, attention drift, loss, the train loss per step, the learning rate and
// the speed (images/s, seconds per epoch), on one x axis (epoch, step or training time) with one cursor
// across them, each with its tools (log y, CSV, PNG).

import { artifactJson } from "./api.js";
import { chartTools } from "./chart_tools.js";
import { COLORS, lineChart } from "./charts.js";
import { h } from "./dom.js";

export const X_AXES = {
  epoch: { label: "epoch", integer: true },
  step: { label: "step", integer: true },
  time: { label: "training time (s)", integer: false,
    title: "each epoch at the end of its training seconds (evaluation not included)" },
};
const LOG_LOSS_RATIO = 20; // a loss that spans more than this factor starts on a log axis (spikes flatten the rest)
const STEP_SMOOTHING = 0.6; // TensorBoard's default weight of the smoothed train loss per step
const TRAIN_TEST = [{ label: "train" }, { label: "test" }];

// Each chart: its box id, its file name (CSV, PNG), title, series and options; `keys` of the epoch records
// it draws, or `steps` ("loss" or "lr": points per step); `log`: it offers a log y axis.
const CHARTS = [
  { id: "chart-accuracy", name: "accuracy", title: "Accuracy", series: TRAIN_TEST, keys: ["train_acc", "test_acc"],
    options: { percentY: true } },
  { id: "chart-drift", name: "attention_drift", title: "Attention drift", keys: ["attention_drift"],
    series: [{ label: "attention drift", color: COLORS[4] }], options: { yRange: (u, min) => [Math.min(0, min ?? 0), 1] } },
  { id: "chart-loss", name: "loss", title: "Loss", series: TRAIN_TEST, keys: ["train_loss", "test_loss"], log: true },
  { id: "chart-step-loss", name: "train_loss_per_step", title: "Train loss (mean of 10 steps)", steps: "loss",
    series: [{ label: "train loss" }, { label: "smoothed" }], options: { points: false }, log: true },
  { id: "chart-lr", name: "learning_rate", title: "Learning rate per epoch", series: [{ label: "lr" }], keys: ["lr"], log: true },
  { id: "chart-throughput", name: "throughput", title: "Throughput (images/s)", keys: ["images_per_second"],
    series: [{ label: "images/s", color: COLORS[2] }], log: true },
  { id: "chart-epoch-seconds", name: "seconds_per_epoch", title: "Seconds per epoch", keys: ["seconds"],
    series: [{ label: "seconds", color: COLORS[3] }], log: true },
];

/** [steps, losses, smoothed]: the train loss per reported window (loss_steps.json and live progress)
 * and its exponential moving average, debiased as TensorBoard draws it. */
export function stepLossSeries(points) {
  const steps = [...points.keys()].sort((a, b) => a - b);
  const losses = steps.map((s) => points.get(s));
  let average = 0;
  const smoothed = losses.map((value, i) => {
    average = STEP_SMOOTHING * average + (1 - STEP_SMOOTHING) * value;
    return average / (1 - STEP_SMOOTHING ** (i + 1));
  });
  return [steps, losses, smoothed];
}

/** Each epoch's end in training seconds: the running sum of the epochs' `seconds` (null from an epoch without). */
export function epochEnds(records) {
  let total = 0;
  return records.map((r) => (total = total === null || r.seconds == null ? null : total + r.seconds));
}

/** Where per-step points sit on the x axis `mode`: fractions of epochs, or training seconds interpolated
 * within their epoch (null in an epoch not finished yet). */
export function stepXs(steps, mode, perEpoch, records) {
  if (mode === "step" || !perEpoch) return steps;
  if (mode === "epoch") return steps.map((s) => s / perEpoch);
  const ends = new Map(epochEnds(records).map((end, i) => [records[i].epoch, [end, records[i].seconds]]));
  return steps.map((s) => {
    const epoch = Math.ceil(s / perEpoch);
    const [end, took] = ends.get(epoch) || [null];
    return end == null ? null : end - took * (1 - (s - (epoch - 1) * perEpoch) / perEpoch);
  });
}

function epochXs(records, mode, perEpoch) {
  if (mode === "step") return records.map((r) => r.epoch * perEpoch);
  return mode === "time" ? epochEnds(records) : records.map((r) => r.epoch);
}

/** [xs, ...ys] without the points whose x is unknown. */
function placed(xs, ys) {
  const keep = xs.map((x, i) => (x == null ? -1 : i)).filter((i) => i >= 0);
  return [keep.map((i) => xs[i]), ...ys.map((values) => keep.map((i) => values[i]))];
}

/** Whether positive `values` span so wide a range that a linear axis flattens most of them (a loss spike). */
export function spansWide(values) {
  const positive = values.filter((v) => v > 0);
  return positive.length > 0 && Math.max(...positive) / Math.min(...positive) > LOG_LOSS_RATIO;
}

function needsLog(records) {
  return spansWide(records.flatMap((r) => [r.train_loss, r.test_loss]));
}

function speedText(records) {
  const timed = records.filter((r) => r.seconds != null);
  if (!timed.length) return "Speed appears with the first epoch.";
  const last = timed[timed.length - 1];
  const mean = timed.reduce((sum, r) => sum + r.seconds, 0) / timed.length;
  const rate = last.images_per_second != null ? `, ${Math.round(last.images_per_second).toLocaleString("en")} images/s` : "";
  return `Epoch ${last.epoch}: ${last.seconds.toFixed(1)} s${rate} · mean ${mean.toFixed(1)} s per epoch over ${timed.length}`
    + ` · ${epochEnds(timed).pop().toFixed(1)} s of training in all (evaluation not included)`;
}

async function optionalJson(path) {
  try {
    return await artifactJson(path);
  } catch (error) {
    if (error.status === 404) return null; // not written yet, or a job from before it was recorded
    throw error;
  }
}

/** Buttons that choose the x axis among `modes` (of X_AXES), epoch first: {element (id `id`), buttons,
 * press(mode): shows `mode` as the chosen one}; `choose(mode)` hears a click. */
export function xAxisControl(choose, { modes = Object.keys(X_AXES), id = "x-axis" } = {}) {
  const buttons = modes.map((mode) => h("button", { type: "button", class: "small", dataset: { mode },
    title: X_AXES[mode].title, "aria-pressed": String(mode === "epoch"), onclick: () => choose(mode) }, mode));
  const press = (mode) => buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.mode === mode)));
  return { element: h("div", { class: "x-axis", id, role: "group", "aria-label": "x axis" },
    h("span", { class: "muted" }, "x axis:"), buttons), buttons, press };
}

/** What a chart draws of the run `run` ({records, stepLoss, lrSteps, perEpoch, mode}), on its x axis. */
function seriesOf(spec, run) {
  const { records, mode, perEpoch } = run;
  if (spec.steps === "loss") {
    const [steps, ...losses] = stepLossSeries(run.stepLoss);
    return placed(stepXs(steps, mode, perEpoch, records), losses);
  }
  if (spec.id === "chart-lr" && run.lrSteps?.length) { // per step once lr_steps.json exists, per epoch before
    return placed(stepXs(run.lrSteps.map((_, i) => i + 1), mode, perEpoch, records), [run.lrSteps]);
  }
  return placed(epochXs(records, mode, perEpoch), spec.keys.map((key) => records.map((r) => r[key] ?? null)));
}

/** Reads the per-step files (after new epochs) and the live point of the progress; works out the steps per epoch. */
async function loadSteps(run, job, current, newEpochs) {
  if (newEpochs) {
    run.lrSteps = (await optionalJson(`/jobs/${job.id}/artifacts/lr_steps.json`)) ?? run.lrSteps;
    const losses = await optionalJson(`/jobs/${job.id}/artifacts/loss_steps.json`);
    losses?.steps.forEach(([step, value]) => run.stepLoss.set(step, value));
  }
  const p = current.progress || {};
  const fromLr = run.lrSteps?.length && run.records.length ? run.lrSteps.length / run.records.length : null; // a finished run
  run.perEpoch = p.steps || run.perEpoch || (Number.isInteger(fromLr) ? fromLr : null);
  if (current.status === "running" && p.loss !== undefined && p.steps) run.stepLoss.set((p.epoch - 1) * p.steps + p.step, p.loss);
}

function available(run, mode) {
  if (mode === "step") return Boolean(run.perEpoch);
  return mode !== "time" || (run.records.length > 0 && epochEnds(run.records).pop() != null);
}

/** The curves of training job `job` over `records` (its epochs, which the caller fills): {element, start, refresh}. */
export function runCurves(job, page, records) {
  const run = { records, stepLoss: new Map(), lrSteps: null, perEpoch: null, mode: "epoch" }; // stepLoss: step -> loss
  const charts = new Map(), tools = new Map();
  let lossLogChosen = false; // the person's choice of axis for the loss outlives the automatic one
  const panels = CHARTS.map((spec) => {
    const box = h("div", { class: "chart", id: spec.id });
    tools.set(spec.id, chartTools(() => charts.get(spec.id), spec.name,
      { log: spec.log, onLog: spec.id === "chart-loss" ? () => (lossLogChosen = true) : null }));
    return { spec, box, element: h("div", { class: "chart-panel" }, tools.get(spec.id).element, box) };
  });
  const speed = h("p", { class: "muted", id: "speed-summary" });
  const axisOptions = () => ({ xLabel: X_AXES[run.mode].label, integerX: X_AXES[run.mode].integer });
  const draw = () => {
    panels.forEach(({ spec }) => charts.get(spec.id).update(seriesOf(spec, run)));
    speed.textContent = speedText(records);
    control.buttons.forEach((b) => (b.disabled = !available(run, b.dataset.mode)));
  };
  const control = xAxisControl((mode) => {
    if (!available(run, mode)) return;
    run.mode = mode;
    control.press(mode);
    charts.forEach((chart) => chart.setOptions(axisOptions()));
    draw();
  });
  return {
    element: h("section", { class: "card", id: "curves" },
      h("div", { class: "section-head" }, h("h2", {}, "Curves"), h("span", { class: "spacer" }), control.element),
      h("div", { class: "charts" }, panels.map((p) => p.element)), speed),
    start() { // once the panels are in the page: the charts take their box's width
      panels.forEach(({ spec, box }) => charts.set(spec.id, lineChart(box, spec.series, [[], ...spec.series.map(() => [])],
        { title: spec.title, ...axisOptions(), ...spec.options, sync: `job-${job.id}` })));
      page.onLeave(() => charts.forEach((c) => c.destroy()));
    },
    async refresh(current, newEpochs) {
      await loadSteps(run, job, current, newEpochs || !run.stepLoss.size);
      if (!page.alive) return;
      const lr = charts.get("chart-lr");
      if (run.lrSteps?.length && lr.options.title !== "Learning rate per step") lr.setOptions({ title: "Learning rate per step", points: false });
      const loss = charts.get("chart-loss");
      if (!lossLogChosen && !loss.options.logY && needsLog(records)) {
        loss.setOptions({ logY: true });
        tools.get("chart-loss").sync();
      }
      draw();
    },
  };
}
