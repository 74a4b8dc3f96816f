// A label audit's page body: which fold trains while it runs, then each fold's model (its held-out images
// and accuracy on them) and the training set's likely label errors (GET /jobs/{id}/label-issues).

import { api } from "./api.js";
import { clear, ENDED, h, pct, seconds } from "./dom.js";
import { labelIssuesGallery } from "./trust.js";

function foldsTable(metrics) {
  return h("table", { class: "folds", id: "audit-folds" },
    h("thead", {}, h("tr", {}, ["Fold", "Held-out images", "Accuracy on them", "Time"].map((t) => h("th", {}, t)))),
    h("tbody", {}, metrics.folds.map((fold) => h("tr", {},
      h("td", {}, String(fold.fold)), h("td", {}, String(fold.images)), h("td", {}, pct(fold.accuracy)),
      h("td", {}, fold.seconds == null ? "earlier delivery" : seconds(fold.seconds))))));
}

function summary(metrics) {
  if (metrics.label_issues == null) {
    return h("p", { class: "muted" }, `Stopped (${metrics.stop_reason || metrics.status}) after ${metrics.folds.length} `
      + "fold(s): the label issues need every fold's scores.");
  }
  return h("p", { id: "audit-summary" }, `${metrics.label_issues} likely label errors among ${metrics.images} training `
    + `images; each image was scored by the model of the ${metrics.folds.length} folds that never saw it `
    + `(out-of-fold accuracy ${pct(metrics.accuracy)}).`);
}

export function mount(box, job) {
  const waiting = (text) => clear(box, h("section", { class: "card" }, h("p", { class: "muted", id: "audit-waiting" }, text)));
  waiting("Waiting for a worker.");
  return {
    async refresh(current) {
      if (!ENDED.includes(current.status)) {
        const p = current.progress || {};
        waiting(current.status === "queued" ? "Waiting for a worker."
          : `${p.phase || "starting"}: each fold's model trains on the other folds, then scores the fold's images. `
            + "The likely label errors appear when the last fold ends.");
        return false;
      }
      const metrics = await api(`/jobs/${current.id}/metrics`);
      clear(box,
        h("section", { class: "card", id: "audit-card" }, h("h2", {}, "Folds"), summary(metrics),
          metrics.folds.length ? foldsTable(metrics) : null),
        metrics.label_issues != null ? h("section", { class: "card", id: "label-issues-card" },
          h("h2", {}, "Likely label errors in the training set"), labelIssuesGallery(job)) : null);
      return true;
    },
  };
}
