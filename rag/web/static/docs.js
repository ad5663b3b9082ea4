// The API docs page: renders the server's OpenAPI document (operations, then schemas).
//
// Everything is built with `el`, so text from the schema always lands as text. A
// `$ref` becomes a link to the schema's own section instead of being expanded in
// place: the page stays short and a schema that refers to itself cannot loop.

import { el } from "./dom.js";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const SCHEMA_REF = "#/components/schemas/";
const CONSTRAINTS = [
  ["minimum", "min"],
  ["maximum", "max"],
  ["exclusiveMinimum", "over"],
  ["exclusiveMaximum", "under"],
  ["minLength", "min length"],
  ["maxLength", "max length"],
  ["minItems", "min items"],
  ["maxItems", "max items"],
  ["pattern", "pattern"],
];

const main = document.getElementById("docs");

/** `code` spans as <code>, the rest as text; blank lines start a new paragraph. */
function prose(text) {
  const box = el("div", { class: "prose" });
  for (const paragraph of String(text).split(/\n\s*\n/)) {
    const p = el("p");
    paragraph
      .split(/`([^`]+)`/)
      .forEach((part, i) => p.append(i % 2 ? el("code", {}, part) : part));
    box.append(p);
  }
  return box;
}

function anchor(method, path) {
  return `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "")}`;
}

function refName(ref) {
  return ref.startsWith(SCHEMA_REF) ? ref.slice(SCHEMA_REF.length) : ref;
}

/** Litestar wraps a named body type as allOf: [{$ref}] to add a title and examples. */
function unwrap(schema) {
  const all = schema && schema.allOf;
  return Array.isArray(all) && all.length === 1 ? all[0] : schema;
}

function joined(nodes, separator) {
  const span = el("span");
  nodes.forEach((node, i) => span.append(...(i ? [separator, node] : [node])));
  return span;
}

/** A one-line description of a schema's type: `string | null`, `array of <Hit>`... */
function typeOf(raw) {
  const schema = unwrap(raw) || {};
  if (schema.$ref) {
    return el("a", { href: `#schema-${refName(schema.$ref)}` }, refName(schema.$ref));
  }
  const choices = schema.oneOf || schema.anyOf;
  if (Array.isArray(choices)) return joined(choices.map(typeOf), " | ");
  if (Array.isArray(schema.enum)) {
    return joined(
      schema.enum.map((value) => el("code", {}, JSON.stringify(value))),
      " | ",
    );
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type].filter(Boolean);
  if (!types.length) return el("span", {}, "any");
  return joined(
    types.map((type) => {
      if (type === "array") return joined(["array of ", typeOf(schema.items)], "");
      return el("span", {}, schema.format ? `${type} (${schema.format})` : type);
    }),
    " | ",
  );
}

/** Defaults and limits, e.g. "default 50, min 1, max 200". */
function constraints(schema) {
  const notes = [];
  if (schema && "default" in schema) notes.push(`default ${JSON.stringify(schema.default)}`);
  for (const [key, label] of CONSTRAINTS) {
    if (schema && key in schema) notes.push(`${label} ${schema[key]}`);
  }
  return notes.join(", ");
}

function describe(description, schema) {
  const cell = el("td");
  if (description) cell.append(prose(description));
  const limits = constraints(schema);
  if (limits) cell.append(el("p", { class: "muted" }, limits));
  return cell;
}

/** A table that scrolls sideways on its own on a narrow screen, not the whole page. */
function table(caption, headings, rows) {
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      {},
      el("caption", { class: "visually-hidden" }, caption),
      el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows),
    ),
  );
}

function properties(schema, caption) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties).map(([name, property]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row" }, el("code", {}, name), required.has(name) ? requiredMark() : ""),
      el("td", {}, typeOf(property)),
      describe(property.description, unwrap(property)),
    ),
  );
  return table(caption, ["Field", "Type", "Description"], rows);
}

function requiredMark() {
  return el("span", { class: "required" }, " required");
}

/** A body's schema: its type, and the fields of an object defined in place. */
function schemaView(raw, caption) {
  const schema = unwrap(raw) || {};
  const box = el("div", { class: "schema" }, el("p", {}, "Type: ", typeOf(schema)));
  if (!schema.$ref && schema.properties) box.append(properties(schema, caption));
  const examples = raw && raw.examples;
  if (Array.isArray(examples) && examples.length) {
    box.append(el("p", {}, "Example:"), el("pre", {}, JSON.stringify(examples[0], null, 2)));
  }
  return box;
}

function contentList(content, caption) {
  return Object.entries(content || {}).map(([mediaType, media]) =>
    el(
      "div",
      { class: "media" },
      el("p", {}, el("code", {}, mediaType)),
      schemaView(media.schema, `${caption}, ${mediaType}`),
    ),
  );
}

function parametersView(parameters, title) {
  const rows = parameters.map((parameter) =>
    el(
      "tr",
      {},
      el(
        "th",
        { scope: "row" },
        el("code", {}, parameter.name),
        parameter.required ? requiredMark() : "",
      ),
      el("td", {}, parameter.in),
      el("td", {}, typeOf(parameter.schema)),
      describe(parameter.description, unwrap(parameter.schema)),
    ),
  );
  return el(
    "section",
    {},
    el("h3", {}, "Parameters"),
    table(`${title}: parameters`, ["Name", "In", "Type", "Description"], rows),
  );
}

function operationView(method, path, operation) {
  const title = `${method.toUpperCase()} ${path}`;
  const section = el(
    "section",
    { class: "operation", id: anchor(method, path), "aria-label": title },
    el(
      "h2",
      {},
      el("span", { class: `method method-${method}` }, method.toUpperCase()),
      " ",
      el("code", { class: "path" }, path),
    ),
  );
  if (operation.summary) section.append(el("p", { class: "summary" }, operation.summary));
  if (operation.description) section.append(prose(operation.description));
  if ((operation.security || []).some((requirement) => Object.keys(requirement).length)) {
    section.append(
      el(
        "p",
        { class: "auth" },
        "Needs an API key when the server requires keys: ",
        el("code", {}, "Authorization: Bearer <key>"),
      ),
    );
  }
  if (operation.parameters && operation.parameters.length) {
    section.append(parametersView(operation.parameters, title));
  }
  const body = operation.requestBody;
  if (body) {
    section.append(
      el(
        "section",
        {},
        el("h3", {}, "Request body", body.required ? requiredMark() : ""),
        ...contentList(body.content, `${title}: request body`),
      ),
    );
  }
  const responses = Object.entries(operation.responses || {}).map(([status, response]) =>
    el(
      "div",
      { class: "response" },
      el(
        "h4",
        {},
        el("span", { class: `status status-${status[0]}xx` }, status),
        " ",
        response.description || "",
      ),
      ...contentList(response.content, `${title}: response ${status}`),
    ),
  );
  section.append(el("section", {}, el("h3", {}, "Responses"), ...responses));
  return section;
}

function schemaSection(name, schema) {
  const section = el(
    "section",
    { class: "component", id: `schema-${name}` },
    el("h3", {}, el("code", {}, name)),
  );
  if (schema.description) section.append(prose(schema.description));
  if (schema.properties) {
    section.append(properties(schema, `${name}: fields`));
  } else {
    section.append(el("p", {}, "Type: ", typeOf(schema)));
  }
  return section;
}

function operations(spec) {
  const found = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (item[method]) found.push([method, path, item[method]]);
    }
  }
  return found;
}

function render(spec, specUrl) {
  const info = spec.info || {};
  const ops = operations(spec);
  const schemas = Object.entries((spec.components && spec.components.schemas) || {});
  const title = el("h1", {}, info.title || "API");
  if (info.version) title.append(" ", el("span", { class: "version" }, `v${info.version}`));
  const header = el("header", { class: "intro" }, title);
  if (info.description) header.append(prose(info.description));
  header.append(
    el(
      "p",
      { class: "muted" },
      `OpenAPI ${spec.openapi} · `,
      el("a", { href: specUrl }, "the schema as JSON"),
    ),
  );
  const contents = el(
    "nav",
    { "aria-label": "Operations" },
    el("h2", {}, "Operations"),
    el(
      "ul",
      { class: "toc" },
      ...ops.map(([method, path, operation]) =>
        el(
          "li",
          {},
          el(
            "a",
            { href: `#${anchor(method, path)}` },
            el("span", { class: `method method-${method}` }, method.toUpperCase()),
            " ",
            el("code", {}, path),
          ),
          operation.summary ? ` ${operation.summary}` : "",
        ),
      ),
    ),
  );
  const components = el(
    "section",
    { "aria-labelledby": "schemas-title" },
    el("h2", { id: "schemas-title" }, "Schemas"),
    ...schemas.map(([name, schema]) => schemaSection(name, schema)),
  );
  main.replaceChildren(
    header,
    contents,
    ...ops.map(([method, path, operation]) => operationView(method, path, operation)),
    components,
  );
  // The page was empty when the browser looked for the fragment: go there now.
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

async function load() {
  const specUrl = main.dataset.spec;
  try {
    const response = await fetch(specUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    render(await response.json(), specUrl);
  } catch (error) {
    main.replaceChildren(
      el("h1", {}, "API"),
      el("p", { class: "error", role: "alert" }, `Could not load ${specUrl}: ${error.message}`),
    );
  } finally {
    main.setAttribute("aria-busy", "false");
  }
}

load();
