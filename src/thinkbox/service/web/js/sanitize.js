// Rich HTML from display() (pandas tables, mostly), kept to a list of harmless tags and attributes.
// DOMParser builds an inert document (its scripts never run); only allowed elements are copied over, as
// new elements with only allowed attributes, and everything else is kept as its text.

import { h } from "./dom.js";

const TAGS = new Set(("table thead tbody tfoot tr th td caption colgroup col div span p br b i strong em " +
  "code pre ul ol li h1 h2 h3 h4 h5 h6 sub sup small hr").split(" "));
const ATTRS = new Set(["colspan", "rowspan", "align", "scope"]);
const DROP = new Set(["script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math"]);

// The page's only Trusted Types policy (its CSP names it; no other can be made): HTML strings reach
// nothing but the inert parser below. Where the browser has no Trusted Types, plain strings.
const inert = globalThis.trustedTypes?.createPolicy("thinkbox-html", { createHTML: (html) => html });

export function sanitizedHtml(html) {
  const text = String(html);
  const doc = new DOMParser().parseFromString(inert ? inert.createHTML(text) : text, "text/html");
  const out = h("div", { class: "html-output" });
  copy(doc.body, out);
  return out;
}

function copy(from, to) {
  for (const node of from.childNodes) {
    if (node.nodeType === Node.TEXT_NODE) {
      to.append(node.data);
      continue;
    }
    if (node.nodeType !== Node.ELEMENT_NODE) continue;
    const tag = node.tagName.toLowerCase();
    if (DROP.has(tag)) continue;
    if (!TAGS.has(tag)) {
      copy(node, to);
      continue;
    }
    const el = document.createElement(tag);
    for (const attr of node.attributes) {
      if (ATTRS.has(attr.name) && /^[\w\s-]{0,20}$/.test(attr.value)) el.setAttribute(attr.name, attr.value);
    }
    copy(node, el);
    to.append(el);
  }
}
