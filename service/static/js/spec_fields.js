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

/** Fieldsets for a spec schema: one per nested object (dataset, model, optimizer, scheduler), then the rest. */
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
  return groups.map(([name, fields]) => h("fieldset", { class: "group" }, h("legend", {}, label(name)), fields));
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
