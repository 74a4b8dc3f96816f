// The job form's fields, generated from the API's own OpenAPI schema (TrainSpec / LRFinderSpec):
// every field of the contract, with its type, allowed values, default and description, and no copy
// of them here. Each input carries data-path ("optimizer.lr") for values and for 422 messages.

import { api } from "./api.js";
import { h } from "./dom.js";

let schemas = null;

export async function loadSchemas() {
  schemas ??= (await api("/openapi.json")).components.schemas;
  return schemas;
}

export function refName(ref) {
  return ref.split("/").pop();
}

export function getPath(object, path) {
  return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);
}

export function setPath(object, path, value) {
  const keys = path.split(".");
  let target = object;
  keys.slice(0, -1).forEach((key) => {
    if (typeof target[key] !== "object" || target[key] === null) target[key] = {};
    target = target[key];
  });
  if (value === undefined) delete target[keys[keys.length - 1]];
  else target[keys[keys.length - 1]] = value;
}

function label(name) {
  return name.replace(/_/g, " ");
}

/** What kind of input a property needs: {widget, options, nullable, numeric, auto}. */
function describe(prop) {
  const variants = prop.anyOf || [prop];
  const nullable = variants.some((v) => v.type === "null");
  const real = variants.filter((v) => v.type !== "null");
  const enumVariant = real.find((v) => v.enum);
  if (real.some((v) => v.type === "array")) return { widget: "augmentation", options: enumVariant?.enum || [] };
  if (real.length === 1 && real[0].enum) return { widget: "select", options: real[0].enum, nullable };
  if (real.length === 1 && real[0].type === "boolean") return { widget: "checkbox" };
  const numeric = real.some((v) => v.type === "number" || v.type === "integer");
  const auto = real.find((v) => v.const !== undefined && v.type === "string")?.const;
  return { widget: "text", numeric, integer: real.every((v) => v.type === "integer"), nullable, auto };
}

/** The text a user typed -> the JSON value (a bad number stays text: the API names it in its 422). */
export function parseInput(kind, text) {
  const trimmed = text.trim();
  if (trimmed === "") return undefined; // absent: the default (or null) applies
  if (kind.auto && trimmed === kind.auto) return trimmed;
  if (kind.numeric) {
    const number = Number(trimmed);
    return Number.isFinite(number) ? number : trimmed;
  }
  return trimmed;
}

function placeholder(prop) {
  if (prop.default !== undefined) return `default ${JSON.stringify(prop.default)}`;
  return prop.anyOf?.some((v) => v.type === "null") ? "null" : "";
}

function input(path, prop, spec) {
  const kind = describe(prop);
  const value = getPath(spec, path);
  const common = { name: path, id: `f-${path}`, dataset: { path }, title: prop.description || "" };
  if (kind.widget === "checkbox") {
    return h("input", { ...common, type: "checkbox", checked: value ?? prop.default ?? false,
      dataset: { path, widget: "checkbox" } });
  }
  if (kind.widget === "select" || kind.widget === "augmentation") {
    const custom = kind.widget === "augmentation" && Array.isArray(value);
    const options = [h("option", { value: "" }, `(default${prop.default !== undefined ? `: ${prop.default}` : ""})`),
      ...kind.options.map((o) => h("option", { value: o, selected: value === o }, String(o))),
      kind.widget === "augmentation" ? h("option", { value: "__custom", selected: custom }, "a list (edit in JSON)") : null];
    return h("select", { ...common, dataset: { path, widget: kind.widget } }, options);
  }
  const text = value === undefined || value === null ? "" : String(value);
  return h("input", { ...common, type: "text", value: text, placeholder: placeholder(prop),
    inputmode: kind.numeric && !kind.auto ? "decimal" : undefined, autocomplete: "off",
    dataset: { path, widget: "text", numeric: kind.numeric ? "1" : "", auto: kind.auto || "" } });
}

function field(path, name, prop, spec) {
  return h("div", { class: "field", dataset: { field: path } },
    h("label", { for: `f-${path}` }, label(name)),
    input(path, prop, spec),
    prop.description ? h("small", { class: "hint" }, prop.description) : null,
    h("small", { class: "field-error", role: "alert" }));
}

function unionFields(path, name, prop, spec) {
  const mapping = prop.discriminator.mapping;
  const key = prop.discriminator.propertyName;
  const current = getPath(spec, `${path}.${key}`);
  const chosen = mapping[current];
  const selector = h("div", { class: "field", dataset: { field: `${path}.${key}` } },
    h("label", { for: `f-${path}.${key}` }, `${label(name)} ${key}`),
    h("select", { id: `f-${path}.${key}`, dataset: { path: `${path}.${key}`, widget: "union" } },
      h("option", { value: "" }, "(default)"),
      Object.keys(mapping).map((tag) => h("option", { value: tag, selected: tag === current }, tag))),
    h("small", { class: "field-error", role: "alert" }));
  const inner = chosen ? objectFields(path, schemas[refName(chosen)], spec, [key]) : [];
  return [selector, ...inner];
}

const FIRST = ["lr", "lr_finder_job"]; // the optimizer's learning rate before its other settings

function objectFields(prefix, schema, spec, skip = []) {
  const entries = Object.entries(schema.properties);
  entries.sort(([a], [b]) => (FIRST.includes(b) ? 1 : 0) - (FIRST.includes(a) ? 1 : 0));
  return entries.flatMap(([name, prop]) => {
    const path = prefix ? `${prefix}.${name}` : name;
    if (skip.includes(name) || prop.const !== undefined) return [];
    if (prop.$ref) return objectFields(path, schemas[refName(prop.$ref)], spec);
    if (prop.oneOf && prop.discriminator) return unionFields(path, name, prop, spec);
    return [field(path, name, prop, spec)];
  });
}

// What most jobs change, first and open, in this order (of a scheduler its kind and key numbers);
// everything else under a collapsed "Advanced".
const ESSENTIAL = {
  TrainSpec: ["dataset.name", "dataset.id", "dataset.train_subset", "dataset.test_subset", "model.name", "model.width",
    "epochs", "batch_size", "optimizer.lr", "optimizer.lr_finder_job", "scheduler.name", "scheduler.max_lr",
    "scheduler.pct_start", "scheduler.peak_epoch", "scheduler.factor", "scheduler.patience", "scheduler.base_lr",
    "scheduler.step_size_up"],
  LRFinderSpec: ["dataset.name", "dataset.id", "dataset.train_subset", "model.name", "model.width", "batch_size",
    "start_lr", "end_lr", "num_iter"],
};

function essentialRank(schemaName, path) {
  return (ESSENTIAL[schemaName] || []).indexOf(path);
}

/** The form of a spec schema: an "essentials" fieldset, then a collapsed <details class="advanced"> with
 * one fieldset per nested object (dataset, model, optimizer, scheduler) and one of the rest. */
export function specFieldsets(schemaName, spec) {
  const schema = schemas[schemaName];
  const groups = [];
  const general = [];
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (prop.$ref) groups.push([name, objectFields(name, schemas[refName(prop.$ref)], spec)]);
    else if (prop.oneOf && prop.discriminator) groups.push([name, unionFields(name, name, prop, spec)]);
    else general.push(field(name, name, prop, spec));
  }
  groups.push([schemaName === "TrainSpec" ? "training" : "range test", general]);
  const rank = (element) => essentialRank(schemaName, element.dataset.field);
  const essentials = groups.flatMap(([, fields]) => fields.filter((f) => rank(f) >= 0));
  essentials.sort((a, b) => rank(a) - rank(b));
  const rest = groups.map(([name, fields]) => [name, fields.filter((f) => rank(f) < 0)]).filter(([, fields]) => fields.length);
  return [
    h("fieldset", { class: "group essentials" }, h("legend", {}, "essentials"), essentials),
    h("details", { class: "advanced" }, h("summary", {}, "Advanced: ", rest.map(([name]) => label(name)).join(", ")),
      h("div", { class: "form-groups" },
        rest.map(([name, fields]) => h("fieldset", { class: "group" }, h("legend", {}, label(name)), fields)))),
  ];
}

/** A property's default in the API schema, by its dotted path from a spec schema ("epochs", "scheduler.factor"
 * with the union member given as `member`); undefined when the schema gives none. */
export function defaultAt(schemaName, path, member) {
  let schema = schemas[schemaName];
  let prop = null;
  for (const key of path.split(".")) {
    prop = schema?.properties?.[key];
    if (!prop) return undefined;
    const ref = prop.$ref || (prop.discriminator && member ? prop.discriminator.mapping[member] : null);
    schema = ref ? schemas[refName(ref)] : null;
  }
  return prop?.default;
}

/** Reads one edited input into the spec. */
export function readInput(element, spec) {
  const { path, widget } = element.dataset;
  if (widget === "checkbox") setPath(spec, path, element.checked);
  else if (widget === "union") setPath(spec, path.split(".")[0], element.value ? { name: element.value } : undefined);
  else if (widget === "augmentation" && element.value === "__custom") {
    if (!Array.isArray(getPath(spec, path))) setPath(spec, path, [{ name: "HorizontalFlip", p: 0.5 }]);
  } else if (widget === "select" || widget === "augmentation") setPath(spec, path, element.value || undefined);
  else setPath(spec, path, parseInput({ numeric: !!element.dataset.numeric, auto: element.dataset.auto }, element.value));
}
