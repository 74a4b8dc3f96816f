// The new-job form: training or LR finder, presets one click away, a structured form generated from
// the API schema and a JSON editor of the full spec kept in sync, 422 messages beside their field.

import { api } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { getPath, loadSchemas, readInput, setPath, specFieldsets } from "./spec_fields.js";

const KINDS = {
  train: { schema: "TrainSpec", endpoint: "/jobs/train", label: "Training" },
  lr_finder: { schema: "LRFinderSpec", endpoint: "/jobs/lr-finder", label: "LR finder" },
};
const SHARED = ["dataset", "model", "batch_size", "augmentation", "seed"]; // fields both specs take

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

async function initialSpec(query, kind, presets, source) {
  if (source) {
    const spec = source.kind === kind ? structuredClone(source.params) : convert(source.params, kind);
    if (query.lr) setPath(spec, "optimizer.lr", Number(query.lr));
    return spec;
  }
  if (query.lr_finder_job) {
    const finder = await api(`/jobs/${query.lr_finder_job}`);
    const spec = convert(finder.params, "train");
    spec.optimizer = { ...spec.optimizer, lr: "auto", lr_finder_job: finder.id };
    return spec;
  }
  const preset = presets.find((p) => p.name === query.preset) || presets[0];
  if (!preset) return { dataset: { name: "fashion_mnist" } };
  const spec = kind === "train" ? structuredClone(preset.spec) : convert(preset.spec, kind);
  if (query.dataset) { // "Train on this" from an uploaded dataset: the first (CPU, flip-only) preset on it
    spec.dataset = { name: "uploaded", id: query.dataset, image_size: Number(query.image_size) || 32 };
  }
  return spec;
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

function showErrors(formBox, generalBox, detail, spec) {
  formBox.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
  formBox.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
  if (!Array.isArray(detail)) return clear(generalBox, errorBox(typeof detail === "string" ? detail : JSON.stringify(detail)));
  const unplaced = [];
  for (const error of detail) {
    const path = fieldPath(error.loc || [], spec);
    const fields = [...formBox.querySelectorAll("[data-field]")];
    const target = fields.find((f) => f.dataset.field === path) || fields.find((f) => path && f.dataset.field.startsWith(`${path}.`));
    const message = `${error.msg}${error.input !== undefined && typeof error.input !== "object" ? ` (got ${JSON.stringify(error.input)})` : ""}`;
    if (target) {
      target.classList.add("invalid");
      const slot = target.querySelector(".field-error");
      slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
    } else unplaced.push(`${(error.loc || []).slice(1).join(".") || "spec"}: ${message}`);
  }
  clear(generalBox, unplaced.length ? errorBox(unplaced.join("\n")) : null);
  formBox.querySelector(".field.invalid")?.scrollIntoView({ block: "center" });
}

export async function render(root, { query }) {
  const source = query.from ? await api(`/jobs/${query.from}`) : null; // "edit and run again", "train with X"
  const kind = KINDS[query.kind] ? query.kind : source?.kind ?? "train";
  const [{ presets }] = await Promise.all([api("/models"), loadSchemas()]);
  let spec = await initialSpec(query, kind, presets, source);
  const formBox = h("div", { class: "form-groups" });
  const generalBox = h("div");
  const editor = h("textarea", { id: "spec-editor", spellcheck: "false", rows: 24, "aria-label": "spec as JSON" });
  const editorNote = h("small", { class: "hint" });

  const drawForm = () => clear(formBox, specFieldsets(KINDS[kind].schema, spec));
  const drawEditor = () => (editor.value = JSON.stringify(spec, null, 2));
  const presetNote = h("p", { class: "hint", id: "preset-note" });
  const applyPreset = (preset) => {
    const figure = preset.figure ? ` · ${(100 * preset.figure.test_acc).toFixed(1)}% test accuracy, ${preset.figure.status}`
      + ` (${preset.figure.of})` : "";
    presetNote.textContent = `${preset.name}: ${preset.description}${figure}`;
    spec = kind === "train" ? structuredClone(preset.spec) : convert(preset.spec, kind);
    drawForm();
    drawEditor();
  };
  formBox.addEventListener("change", (event) => {
    if (!event.target.dataset.path) return;
    readInput(event.target, spec);
    if (["union", "augmentation"].includes(event.target.dataset.widget)) drawForm();
    drawEditor();
  });
  formBox.addEventListener("input", (event) => {
    if (event.target.dataset.widget !== "text") return;
    readInput(event.target, spec);
    drawEditor();
  });
  editor.addEventListener("input", () => {
    try {
      spec = JSON.parse(editor.value);
      editorNote.textContent = "";
      drawForm();
    } catch (error) {
      editorNote.textContent = `not JSON yet: ${error.message}`;
    }
  });
  const submit = h("button", { type: "submit", class: "primary", id: "submit" }, `Start ${KINDS[kind].label.toLowerCase()}`);
  const form = h("form", { class: "job-form", novalidate: true }, formBox,
    h("div", { class: "row" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const job = await api(KINDS[kind].endpoint, { method: "POST", json: spec });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      if (error.status === undefined) clear(generalBox, errorBox(error));
      else showErrors(formBox, generalBox, error.detail, spec);
    } finally {
      submit.disabled = false;
    }
  });

  const kindSwitch = h("div", { class: "tabs" }, Object.entries(KINDS).map(([name, k]) =>
    h("a", { class: "tab", href: `#/new?kind=${name}`, "aria-selected": String(name === kind) }, k.label)));
  const presetBar = h("div", { class: "presets" }, h("span", { class: "muted" }, "Presets: "),
    presets.map((p) => h("button", { type: "button", class: "small", title: p.description, dataset: { preset: p.name },
      onclick: () => applyPreset(p) }, p.name)));
  clear(root, h("h1", {}, "New job"), kindSwitch, presetBar, presetNote,
    getPath(spec, "optimizer.lr") === "auto"
      ? h("p", { class: "note" }, 'Learning rate "auto": the suggestion of ',
        h("a", { href: `#/jobs/${spec.optimizer.lr_finder_job}` }, `LR-finder job ${spec.optimizer.lr_finder_job.slice(0, 8)}`),
        ", taken when the job starts.") : null,
    generalBox,
    h("div", { class: "form-layout" }, form,
      h("div", { class: "editor card" }, h("h2", {}, "Spec (JSON)"),
        h("p", { class: "hint" }, "The full POST body; the form and this editor follow each other."), editor, editorNote)));
  drawForm();
  drawEditor();
}
