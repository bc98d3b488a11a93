// The page of fusion's service: a form built from GET /schema, answered by POST /explain.
// Plain JavaScript, no build step, nothing loaded from elsewhere (the service's CSP says so).
"use strict";

const $ = (id) => document.getElementById(id);
let schema = null;

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function fmt(x) {
  // Like Python's "{:g}": 120 not 120.0, 0.1 not 0.10000000000000001.
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(6)));
}

function buildField(feature) {
  const box = element("div", { class: "field" });
  const id = `field-${feature.name}`;
  const unit = feature.unit ? ` (${feature.unit})` : "";
  box.append(element("label", { for: id }, feature.name + unit));
  let input;
  // The widget the service names for the feature's kind: a number, or a choice among categories.
  if (feature.input === "number") {
    input = element("input", { id, name: feature.name, type: "number", step: "any", inputmode: "decimal" });
    // A range the server enforces is enforced here too; a range whose out-of-range
    // values the schema takes as "not measured" is only shown.
    if (feature.range && feature.out_of_range === "error") {
      input.min = feature.range[0];
      input.max = feature.range[1];
    }
  } else {
    input = element("select", { id, name: feature.name });
    input.append(element("option", { value: "" }, "not given"));
    for (const category of feature.categories) input.append(element("option", { value: category }, category));
  }
  input.dataset.feature = feature.name;
  box.append(input);
  const hint = feature.input === "number" && feature.range
    ? `${fmt(feature.range[0])} to ${fmt(feature.range[1])}${feature.unit ? " " + feature.unit : ""}`
    : "";
  const more = [hint, feature.required ? "required once a record is given" : "", feature.description]
    .filter(Boolean).join("; ");
  if (more) box.append(element("span", { class: "hint" }, more));
  box.append(element("p", { class: "error", id: `error-${feature.name}`, "data-error-for": feature.name }));
  return box;
}

function describeModel(health) {
  $("model").textContent =
    `Model ${health.model}: classes ${health.classes.join(", ")}; uses ${health.modalities.map((m) => (m === "tabular" ? "record" : m)).join(" and ")}.`;
  $("version").textContent = `fusion ${health.version}`;
}

async function init() {
  try {
    const [health, description] = await Promise.all([getJSON("/health"), getJSON("/schema")]);
    schema = description;
    describeModel(health);
    const fields = $("fields");
    for (const feature of schema.features) fields.append(buildField(feature));
    if (!schema.features.length) fields.append(element("p", { class: "muted" }, "This model reads no record."));
    if (!schema.image.used) {
      $("image").disabled = true;
      $("image-limits").textContent = "This model reads no image.";
    } else {
      $("image-limits").textContent =
        `${schema.image.formats}; up to ${(schema.image.max_bytes / 2 ** 20).toFixed(0)} MB ` +
        `and ${schema.image.max_pixels / 1e6} megapixels.` +
        (schema.image.channels === 3 ? " Read in colour (RGB)." : "");
    }
    document.body.dataset.state = "ready";
  } catch (err) {
    showError("", `The service did not describe its model (${err.message}).`);
    document.body.dataset.state = "error";
  }
}

function clearErrors() {
  for (const node of document.querySelectorAll("[data-error-for]")) node.textContent = "";
  for (const node of document.querySelectorAll(".invalid")) node.classList.remove("invalid");
}

function showError(field, message) {
  // Next to the field the server names (a record feature, "image", "record"), else above the button.
  const target = document.querySelector(`[data-error-for="${CSS.escape(field || "")}"]`) || $("error-form");
  target.textContent = message;
  const input = field ? $(`field-${field}`) || (field === "image" ? $("image") : null) : null;
  if (input) input.classList.add("invalid");
}

function readRecord() {
  // The record as JSON, or null when no value is given; browser-side checks first.
  const record = {};
  let ok = true;
  for (const feature of schema.features) {
    const input = $(`field-${feature.name}`);
    if (feature.input === "number") {
      if (input.validity.badInput) {
        showError(feature.name, `'${feature.name}' must be ${feature.accepted}; got text that is not a number`);
        ok = false;
      } else if (input.value !== "") {
        if (input.validity.rangeUnderflow || input.validity.rangeOverflow) {
          showError(feature.name, `'${feature.name}' must be ${feature.accepted}; got ${input.value}`);
          ok = false;
        }
        record[feature.name] = Number(input.value);
      }
    } else if (input.value !== "") {
      record[feature.name] = input.value;
    }
  }
  return { ok, record: Object.keys(record).length ? record : null };
}

function showResult(answer) {
  $("label").textContent = answer.label;
  $("modalities").textContent = answer.modalities.map((m) => (m === "tabular" ? "record" : m)).join(" + ");
  const body = $("probabilities").querySelector("tbody");
  body.replaceChildren();
  for (const [name, p] of Object.entries(answer.probabilities)) {
    const row = element("tr", { "data-class": name, "data-probability": String(p) });
    if (name === answer.label) row.classList.add("top");
    const fill = element("div", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    const track = element("div", { class: "track" });
    track.append(fill);
    const bar = element("td", { class: "bar" });
    bar.append(track);
    row.append(element("td", {}, name), bar, element("td", { class: "value" }, p.toFixed(3)));
    body.append(row);
  }
  $("threshold").textContent = answer.above_threshold.length
    ? `At or above the operating point (not to rule out): ${answer.above_threshold.join(", ")}.`
    : "";
  $("prediction-set").textContent = answer.prediction_set
    ? `Cannot rule out (${Math.round(100 * answer.coverage)} % prediction set): ${answer.prediction_set.join(", ")}.`
    : "";
  $("heatmap-figure").hidden = !answer.heatmap;
  if (answer.heatmap) $("heatmap").src = answer.heatmap;
  const shares = $("shares");
  shares.replaceChildren();
  const given = Object.entries(answer.modality_share || {}).filter(([, s]) => s > 0);
  $("shares-block").hidden = given.length === 0;
  for (const [name, share] of given) {
    const part = element("div", { class: name, "data-modality": name, "data-share": String(share) },
      `${name === "tabular" ? "record" : name} ${(100 * share).toFixed(0)}%`);
    part.style.width = `${100 * share}%`;
    shares.append(part);
  }
  const drivers = $("drivers").querySelector("tbody");
  drivers.replaceChildren();
  $("drivers-block").hidden = !(answer.drivers || []).length;
  for (const d of answer.drivers || []) {
    const value = d.value === null ? "missing" : `${typeof d.value === "number" ? fmt(d.value) : d.value}${d.unit ? " " + d.unit : ""}`;
    const effect = element("td", { class: d.effect > 0 ? "up" : "down" }, `${d.effect > 0 ? "+" : ""}${d.effect.toFixed(4)}`);
    const row = element("tr", { "data-feature": d.feature });
    row.append(element("td", {}, d.feature), element("td", {}, value), effect);
    drivers.append(row);
  }
  $("result").hidden = false;
}

async function submit(event) {
  event.preventDefault();
  if (!schema) return;
  clearErrors();
  const { ok, record } = readRecord();
  if (!ok) {
    document.body.dataset.state = "invalid";
    return;
  }
  const form = new FormData();
  const file = $("image").files[0];
  if (file) form.append("image", file, file.name);
  if (record) form.append("record", JSON.stringify(record));
  document.body.dataset.state = "busy";
  try {
    const response = await fetch("/explain", { method: "POST", body: form });
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      showError(answer.field, answer.detail || `HTTP ${response.status}`);
      $("result").hidden = true;
      document.body.dataset.state = "refused";
      return;
    }
    showResult(answer);
    document.body.dataset.state = "done";
  } catch (err) {
    showError("", `No answer from the service (${err.message}).`);
    document.body.dataset.state = "error";
  }
}

function preview() {
  const file = $("image").files[0];
  const img = $("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  // Browsers cannot show DICOM: those are seen in the answer's heatmap instead.
  const shown = file && /\.(png|jpe?g)$/i.test(file.name);
  img.hidden = !shown;
  if (shown) img.src = URL.createObjectURL(file);
  else img.removeAttribute("src");
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", submit);
  $("form").addEventListener("reset", () => {
    clearErrors();
    $("result").hidden = true;
    setTimeout(preview, 0);
  });
  $("image").addEventListener("change", preview);
  init();
});
