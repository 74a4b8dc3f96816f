// The new-job form: training or LR finder, presets one click away (the one the form still holds marked),
// a structured form generated from the API schema and a JSON editor of the full spec kept in sync, 422
// messages beside their field, and Start with what it will run and what is wrong kept in view.

import { api } from "./api.js";
import { clear, errorBox, h, lrText } from "./dom.js";
import { defaultAt, getPath, loadSchemas, readInput, setPath, specFieldsets } from "./spec_fields.js";

const KINDS = {
  train: { schema: "TrainSpec", endpoint: "/jobs/train", label: "Training" },
  lr_finder: { schema: "LRFinderSpec", endpoint: "/jobs/lr-finder", label: "LR finder" },
};
const SHARED = ["dataset", "model", "batch_size", "augmentation", "seed", "label_smoothing"]; // fields both specs take
const MATCHED = "dataset, model, batch size and augmentation"; // what makes an LR finder's run a preset's
const DEFAULT_SCHEDULER = "reduce_on_plateau"; // TrainSpec's default_factory: the OpenAPI schema does not state it
const KEY_NUMBERS = { one_cycle: ["max_lr", "pct_start", "peak_epoch"], reduce_on_plateau: ["factor", "patience"],
  cyclic: ["base_lr", "max_lr", "step_size_up"] }; // what the summary line shows of each scheduler

/** A spec of one kind turned into the other: the shared fields, and the optimizer without its lr. */
export function convert(spec, kind) {
  const out = Object.fromEntries(SHARED.filter((k) => spec[k] !== undefined).map((k) => [k, structuredClone(spec[k])]));
  if (spec.optimizer) {
    const { lr, lr_finder_job: job, ...sgd } = spec.optimizer;
    out.optimizer = kind === "train" && lr !== undefined ? { ...sgd, lr } : sgd;
    if (kind === "train" && job) out.optimizer.lr_finder_job = job;
  }
  return out;
}

function recipeKey(spec) {
  const or = (value, path) => value ?? defaultAt("TrainSpec", path);
  return JSON.stringify([spec.dataset?.name, or(spec.model?.name, "model.name"), or(spec.model?.width, "model.width"),
    or(spec.batch_size, "batch_size"), or(spec.augmentation, "augmentation")]);
}

/** The preset whose dataset name, model, batch size and augmentation an LR finder ran with, or null. */
export function matchingPreset(params, presets) {
  const key = recipeKey(params);
  return presets.find((preset) => recipeKey(preset.spec) === key) || null;
}

/** "Train with this LR": the whole training recipe the LR finder was measured for (its preset's, with the
 * finder's dataset and seed; else the finder's fields and the training defaults), lr "auto" from it, the
 * optimizer it measured, and a scheduler peak that is the suggestion rather than the preset's number. */
function fromLrFinder(finder, presets) {
  const preset = matchingPreset(finder.params, presets);
  let spec;
  if (preset) {
    spec = structuredClone(preset.spec);
    for (const key of ["dataset", "seed"]) if (finder.params[key] !== undefined) spec[key] = structuredClone(finder.params[key]);
    if (spec.scheduler && "max_lr" in spec.scheduler) delete spec.scheduler.max_lr; // null: the optimizer's lr
  } else {
    spec = convert(finder.params, "train");
    spec.epochs = defaultAt("TrainSpec", "epochs");
    spec.scheduler = { name: DEFAULT_SCHEDULER };
    spec.test_time_flip = defaultAt("TrainSpec", "test_time_flip");
  }
  const { lr, ...measured } = finder.params.optimizer || {};
  spec.optimizer = { ...measured, lr: "auto", lr_finder_job: finder.id };
  return { spec, origin: { preset: preset?.name, finder } };
}

async function initialSpec(query, kind, presets, source) {
  if (source) {
    const spec = source.kind === kind ? structuredClone(source.params) : convert(source.params, kind);
    if (query.lr) setPath(spec, "optimizer.lr", Number(query.lr));
    return { spec, origin: { job: source.id } };
  }
  if (query.lr_finder_job) return fromLrFinder(await api(`/jobs/${query.lr_finder_job}`), presets);
  const preset = presets.find((p) => p.name === query.preset) || presets[0];
  if (!preset) return { spec: { dataset: { name: "fashion_mnist" } }, origin: {} };
  const spec = kind === "train" ? structuredClone(preset.spec) : convert(preset.spec, kind);
  if (query.dataset) { // "Train on this" from an uploaded dataset: the first (CPU, flip-only) preset on it
    spec.dataset = { name: "uploaded", id: query.dataset, image_size: Number(query.image_size) || 32 };
    const fitted = Number(query.train) > 0 ? fitToSize(spec, Number(query.train)) : null;
    return { spec, origin: { preset: preset.name, fitted } };
  }
  return { spec, origin: { preset: preset.name } };
}

const MIN_STEPS = 400; // optimizer steps a run on a small dataset gets at least
const MIN_BATCH = 32, MAX_EPOCHS = 60;

/** A preset's spec made to suit `train` images: batches of at most a sixteenth of them (not under MIN_BATCH),
 * the lr (and OneCycle's peak) scaled with the batch (the linear scaling rule), and epochs enough for
 * MIN_STEPS steps. A preset made for 60,000 images gives a 960-image set 20 steps (chance accuracy);
 * fitted, 420. Changes `spec`; returns what it changed, or null when the preset suits the set already. */
export function fitToSize(spec, train) {
  const batch = spec.batch_size ?? 128;
  let fitted = batch;
  while (fitted > MIN_BATCH && fitted * 16 > train) fitted /= 2;
  const epochs = Math.min(MAX_EPOCHS, Math.max(spec.epochs ?? 1, Math.ceil(MIN_STEPS / Math.ceil(train / fitted))));
  if (fitted === batch && epochs === spec.epochs) return null;
  const scale = (value) => (typeof value === "number" ? Number((value * fitted / batch).toPrecision(3)) : value);
  spec.batch_size = fitted;
  spec.epochs = epochs;
  if (spec.optimizer) spec.optimizer.lr = scale(spec.optimizer.lr);
  if (spec.scheduler?.max_lr != null) spec.scheduler.max_lr = scale(spec.scheduler.max_lr);
  return { train, batch: fitted, epochs, lr: spec.optimizer?.lr };
}

function schedulerText(spec) {
  const name = spec.scheduler?.name ?? DEFAULT_SCHEDULER;
  const numbers = (KEY_NUMBERS[name] || []).flatMap((key) => {
    const value = spec.scheduler?.[key] ?? defaultAt("TrainSpec", `scheduler.${key}`, name);
    if (key === "max_lr" && value == null) return [spec.optimizer?.lr === "auto" ? "peak = the suggested lr" : "peak = the lr"];
    return value == null ? [] : [`${key.replace(/_/g, " ")} ${value}`];
  });
  return `${name}${spec.scheduler ? "" : " (the default)"}${numbers.length ? ` (${numbers.join(", ")})` : ""}`;
}

function originText(origin) {
  if (origin.finder && origin.preset) return `from preset ${origin.preset}: the LR finder ran with its ${MATCHED}`;
  if (origin.finder) return `from the LR finder's spec and the training defaults: no preset has its ${MATCHED}`;
  if (origin.job) return `from job ${origin.job.slice(0, 8)}`;
  if (origin.fitted) {
    const { train, batch, epochs, lr } = origin.fitted;
    return `preset ${origin.preset} fitted to ${train.toLocaleString("en")} training images: batch ${batch}, `
      + `${epochs} epochs, lr ${lr} (scaled with the batch)`;
  }
  return origin.preset ? `preset ${origin.preset}` : "";
}

/** The line above Start: what this spec will run, defaults included, and where it came from. */
export function runSummary(kind, spec, origin) {
  const value = (path) => getPath(spec, path) ?? defaultAt(KINDS[kind].schema, path);
  const smoothing = value("label_smoothing") ?? 0;
  const finderSmoothing = origin.finder?.params.label_smoothing ?? smoothing;
  const parts = kind === "train"
    ? [`${value("epochs")} epochs`, `scheduler ${schedulerText(spec)}`,
      `label smoothing ${smoothing}${finderSmoothing !== smoothing ? ` (the LR finder ran at ${finderSmoothing})` : ""}`,
      `test-time flip ${value("test_time_flip") ? "on" : "off"}`]
    : [`${value("num_iter")} iterations, lr ${lrText(value("start_lr"))} to ${lrText(value("end_lr"))}`,
      `label smoothing ${smoothing}`];
  const from = originText(origin);
  if (from) parts.push(origin.edited ? `${from}, edited` : from);
  return parts.join(" · ");
}

/** 422 `loc` -> the data-path of the field it names (union tags such as "one_cycle" are skipped). */
export function fieldPath(loc, spec) {
  const keys = [];
  let value = spec;
  for (const segment of loc.slice(loc[0] === "body" ? 1 : 0)) {
    if (value !== undefined && (value === null || typeof value !== "object")) break; // a leaf: the rest names union members
    const isObject = value !== undefined;
    if (isObject && !(segment in value) && value.name === segment) continue; // a union's tag
    keys.push(segment);
    value = isObject ? value[segment] : undefined;
  }
  return keys.join(".");
}

/** 422 details beside their fields (an "Advanced" section holding one opens); returns what could not be placed
 * and how many fields were marked. */
function showErrors(formBox, detail, spec) {
  formBox.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
  formBox.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  if (!Array.isArray(detail)) return { unplaced: [typeof detail === "string" ? detail : JSON.stringify(detail)], marked: [] };
  const unplaced = [], marked = [];
  for (const error of detail) {
    const path = fieldPath(error.loc || [], spec);
    const fields = [...formBox.querySelectorAll("[data-field]")];
    const target = fields.find((f) => f.dataset.field === path) || fields.find((f) => path && f.dataset.field.startsWith(`${path}.`));
    const message = `${error.msg}${error.input !== undefined && typeof error.input !== "object" ? ` (got ${JSON.stringify(error.input)})` : ""}`;
    if (target) {
      target.classList.add("invalid");
      target.closest("details")?.setAttribute("open", "");
      const slot = target.querySelector(".field-error");
      slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
      marked.push(target.dataset.field);
    } else unplaced.push(`${(error.loc || []).slice(1).join(".") || "spec"}: ${message}`);
  }
  formBox.querySelector(".field.invalid")?.scrollIntoView({ block: "center" });
  return { unplaced, marked: [...new Set(marked)] };
}

/** Whether two specs hold the same values, whatever the order of their keys. */
export function sameSpec(a, b) {
  const sorted = (key, value) => (value && typeof value === "object" && !Array.isArray(value)
    ? Object.fromEntries(Object.entries(value).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : value);
  return JSON.stringify(a, sorted) === JSON.stringify(b, sorted);
}

/** The spec typed in the JSON editor, or the parser's complaint. */
function parseSpec(text) {
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) return { error: "the spec must be a JSON object" };
    return { spec: value };
  } catch (error) {
    return { error: error.message };
  }
}

function presetNoteText(preset, kind) {
  if (kind !== "train") { // a training preset's description tells of epochs and schedules a range test does not run
    return `${preset.name}: its dataset, model, batch size, augmentation and optimizer, for a range test `
      + "(its epochs and schedule belong to training)";
  }
  const figure = preset.figure ? ` · ${(100 * preset.figure.test_acc).toFixed(1)}% test accuracy, ${preset.figure.status}`
    + ` (${preset.figure.of})` : "";
  return `${preset.name}: ${preset.description}${figure}`;
}

export async function render(root, { query }) {
  const source = query.from ? await api(`/jobs/${query.from}`) : null; // "edit and run again", "train with X"
  const kind = KINDS[query.kind] ? query.kind : source?.kind ?? "train";
  const [{ presets }] = await Promise.all([api("/models"), loadSchemas()]);
  let { spec, origin } = await initialSpec(query, kind, presets, source);
  let baseline = structuredClone(spec); // what the form started from: a preset's, a job's or the LR finder's spec
  let jsonError = null, advancedOpen = false;
  const formBox = h("div", { class: "form-body" });
  const editor = h("textarea", { id: "spec-editor", spellcheck: "false", rows: 24, "aria-label": "spec as JSON" });
  const submit = h("button", { type: "submit", class: "primary", id: "submit" }, `Start ${KINDS[kind].label.toLowerCase()}`);
  const summary = h("p", { class: "run-summary", id: "run-summary" });
  const jsonNote = h("small", { class: "field-error", id: "json-error", role: "alert" });
  const errorSummary = h("div", { id: "error-summary" });
  const presetNote = h("p", { class: "hint", id: "preset-note" });

  const update = () => {
    origin.edited = !sameSpec(spec, baseline);
    const held = origin.preset && !origin.finder && !origin.fitted && !origin.edited ? origin.preset : null; // the preset the form still holds
    presetButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.preset === held)));
    summary.textContent = runSummary(kind, spec, origin);
    submit.disabled = jsonError !== null;
    jsonNote.textContent = jsonError === null ? "" : `Start is off: the JSON does not parse (${jsonError}).`;
  };
  const drawForm = () => {
    clear(formBox, specFieldsets(KINDS[kind].schema, spec));
    formBox.querySelector("details.advanced").open = advancedOpen;
  };
  const drawEditor = () => (editor.value = JSON.stringify(spec, null, 2));
  const presetButtons = presets.map((p) => h("button", { type: "button", class: "small", "aria-pressed": "false",
    title: presetNoteText(p, kind), dataset: { preset: p.name }, onclick: () => applyPreset(p) }, p.name));
  const applyPreset = (preset) => {
    presetNote.textContent = presetNoteText(preset, kind);
    spec = kind === "train" ? structuredClone(preset.spec) : convert(preset.spec, kind);
    baseline = structuredClone(spec);
    origin = { preset: preset.name };
    jsonError = null;
    drawForm();
    drawEditor();
    update();
  };
  const edited = () => {
    drawEditor();
    update();
  };
  formBox.addEventListener("toggle", (event) => {
    if (event.target.matches("details.advanced")) advancedOpen = event.target.open;
  }, true); // toggle does not bubble
  formBox.addEventListener("change", (event) => {
    if (!event.target.dataset.path) return;
    readInput(event.target, spec);
    if (["union", "augmentation"].includes(event.target.dataset.widget)) drawForm();
    edited();
  });
  formBox.addEventListener("input", (event) => {
    if (event.target.dataset.widget !== "text") return;
    readInput(event.target, spec);
    edited();
  });
  editor.addEventListener("input", () => {
    const parsed = parseSpec(editor.value);
    jsonError = parsed.error ?? null;
    if (parsed.spec) {
      spec = parsed.spec;
      drawForm();
    }
    update();
  });
  const form = h("form", { class: "job-form", novalidate: true }, formBox,
    h("div", { class: "form-actions" }, summary, errorSummary, h("div", { class: "row" }, submit, jsonNote)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (jsonError !== null) return; // Enter in a field submits too
    submit.disabled = true;
    try {
      const job = await api(KINDS[kind].endpoint, { method: "POST", json: spec });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (error.status === undefined) return clear(errorSummary, errorBox(error));
      const { unplaced, marked } = showErrors(formBox, error.detail, spec);
      const fields = marked.length ? `${marked.length} field${marked.length > 1 ? "s" : ""} to fix: ${marked.join(", ")}` : null;
      clear(errorSummary, errorBox([fields, ...unplaced].filter(Boolean).join("\n")));
    } finally {
      update();
    }
  });

  const kindSwitch = h("div", { class: "tabs" }, Object.entries(KINDS).map(([name, k]) =>
    h("a", { class: "tab", href: `#/new?kind=${name}`, "aria-selected": String(name === kind) }, k.label)));
  const presetBar = h("div", { class: "presets" }, h("span", { class: "muted" }, "Presets: "), presetButtons);
  clear(root, h("h1", {}, "New job"), kindSwitch, presetBar, presetNote,
    getPath(spec, "optimizer.lr") === "auto"
      ? h("p", { class: "note", id: "lr-auto-note" }, 'Learning rate "auto": the suggestion of ',
        h("a", { href: `#/jobs/${spec.optimizer.lr_finder_job}` }, `LR-finder job ${spec.optimizer.lr_finder_job.slice(0, 8)}`),
        ", taken when the job starts.") : null,
    h("div", { class: "form-layout" }, form,
      h("div", { class: "editor card" }, h("h2", {}, "Spec (JSON)"),
        h("p", { class: "hint" }, "The full POST body; the form and this editor follow each other."), editor)));
  const started = presets.find((p) => p.name === origin.preset);
  if (started && !origin.finder) presetNote.textContent = presetNoteText(started, kind);
  drawForm();
  drawEditor();
  update();
}
