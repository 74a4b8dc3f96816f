// A job page's head: the run's name (or kind and id), its tags and note, edited in place (PATCH
// /jobs/{id}), and, once the job has ended, Delete behind a confirmation (DELETE /jobs/{id}).

import { api, apiNoContent, ApiError } from "./api.js";
import { clear, ENDED, errorBox, h } from "./dom.js";
import { tagChips } from "./jobs.js";

/** "a, b ,c" -> ["a", "b", "c"] (the API trims each and drops duplicates too). */
export function parseTags(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

function problem(error) {
  if (error instanceof ApiError && Array.isArray(error.detail)) {
    return error.detail.map((e) => `${(e.loc || []).slice(1).join(".") || "body"}: ${e.msg}`).join("\n");
  }
  return error;
}

function editor(job, onSaved, onCancel) {
  const name = h("input", { type: "text", id: "run-name-input", value: job.name || "", maxlength: 100, size: 40,
    placeholder: "a name for this run" });
  const tags = h("input", { type: "text", id: "run-tags-input", value: (job.tags || []).join(", "), size: 40,
    placeholder: "baseline, sweep-1" });
  const note = h("textarea", { id: "run-note-input", rows: 3, cols: 60, maxlength: 2000, placeholder: "what this run tries" },
    job.note || "");
  const errors = h("div");
  const form = h("form", { class: "run-labels-form card", id: "run-labels-form" },
    h("label", {}, "name ", name),
    h("label", {}, "tags ", tags, h("span", { class: "hint" }, "comma-separated, at most 20, each up to 40 characters")),
    h("label", {}, "note ", note),
    errors,
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary small", id: "run-save" }, "Save"),
      h("button", { type: "button", class: "small", onclick: onCancel }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      onSaved(await api(`/jobs/${job.id}`, { method: "PATCH",
        json: { name: name.value, tags: parseTags(tags.value), note: note.value } }));
    } catch (error) {
      clear(errors, errorBox(problem(error)));
    }
  });
  requestAnimationFrame(() => name.focus());
  return form;
}

function confirmDelete(job, title) {
  const message = h("p", {}, `Delete ${title}? Its metrics, artifacts and checkpoint are removed for good.`);
  const errors = h("div");
  const confirm = h("button", { type: "button", class: "danger", id: "delete-confirm" }, "Delete");
  const dialog = h("dialog", { id: "delete-dialog", class: "confirm" }, message, errors,
    h("div", { class: "row" }, confirm,
      h("button", { type: "button", id: "delete-keep", onclick: () => dialog.close() }, "Keep it")));
  let force = false;
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      await apiNoContent(`/jobs/${job.id}${force ? "?force=true" : ""}`, { method: "DELETE" });
      dialog.close();
      location.hash = "#/jobs";
    } catch (error) {
      const latest = error instanceof ApiError && error.status === 409 && String(error.detail).includes("latest");
      clear(errors, errorBox(error));
      if (latest) { // its checkpoint is what /predict?checkpoint=latest answers with: say so, then allow it
        force = true;
        confirm.textContent = "Delete it and its checkpoint";
      }
      confirm.disabled = false;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.getElementById("main").append(dialog);
  dialog.showModal();
}

/** The head of a job's page: {element, update(job)} (update: after each poll, e.g. Delete once it ends). */
export function runHead(job, kindTitle) {
  const element = h("div", { class: "run-head" });
  let editing = false;
  const title = () => job.name || `${kindTitle} ${job.id.slice(0, 8)}`;
  const draw = () => {
    clear(element,
      h("div", { class: "section-head" },
        h("h1", { id: "run-title" }, job.name ? job.name : [`${kindTitle} `, h("span", { class: "mono" }, job.id.slice(0, 8))]),
        job.name ? h("span", { class: "mono muted", title: job.id }, `${kindTitle} ${job.id.slice(0, 8)}`) : null,
        h("span", { class: "spacer" }),
        editing ? null : h("button", { type: "button", class: "small", id: "run-edit",
          onclick: () => { editing = true; draw(); } }, job.name || job.tags?.length || job.note ? "Edit name, tags, note" : "Name this run"),
        ENDED.includes(job.status) ? h("button", { type: "button", class: "small danger", id: "run-delete",
          onclick: () => confirmDelete(job, title()) }, "Delete") : null),
      editing ? editor(job, (saved) => { job = saved; editing = false; draw(); }, () => { editing = false; draw(); })
        : [job.tags?.length ? h("div", { id: "run-tags" }, tagChips(job.tags)) : null,
          job.note ? h("p", { class: "run-note", id: "run-note" }, job.note) : null]);
  };
  draw();
  return {
    element,
    update(next) {
      const labels = (j) => JSON.stringify([j.name, j.tags, j.note, ENDED.includes(j.status)]);
      const changed = labels(next) !== labels(job);
      job = next;
      if (changed && !editing) draw(); // renamed elsewhere, or ended: Delete appears
    },
  };
}
