// A small markdown renderer for answers: builds DOM nodes, never HTML strings, so markup in the text
// (<script>, <img onerror=...>) shows as the characters it is. Covers what answers use: paragraphs,
// headings, lists, fenced code, block quotes, tables, **bold**, *italic*, `code` and http(s) links.

import { h } from "./dom.js";
import { highlight } from "./highlight.js";

// Block quotes nest at most this deep; deeper '>' stay text. (Each level is a call: an answer of thousands
// of '>' once overflowed the stack and crashed the tab, again at every reload of the conversation.)
const MAX_QUOTE_DEPTH = 8;

export function renderMarkdown(text, depth = 0) {
  const root = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)/);
    if (fence) {
      const body = [];
      for (i += 1; i < lines.length && !lines[i].trim().startsWith(fence[1]); i += 1) body.push(lines[i]);
      i += 1;
      const code = body.join("\n");
      root.append(h("pre", {}, fence[2] === "python" || fence[2] === "py" ? highlight(code) : h("code", {}, code)));
      continue;
    }
    if (!line.trim()) { i += 1; continue; }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      root.append(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
      i += 1;
      continue;
    }
    if (/^\s*>/.test(line)) {
      const body = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i += 1) body.push(lines[i].replace(/^\s*>\s?/, ""));
      const inner = depth + 1 < MAX_QUOTE_DEPTH ? renderMarkdown(body.join("\n"), depth + 1) : h("p", {}, body.join("\n"));
      root.append(h("blockquote", {}, inner));
      continue;
    }
    if (isTableStart(lines, i)) {
      i = table(lines, i, root);
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+/);
    if (item) {
      const ordered = /\d/.test(item[1]);
      const list = h(ordered ? "ol" : "ul");
      for (; i < lines.length; i += 1) {
        const m = lines[i].match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        list.append(h("li", {}, inline(m[2])));
      }
      root.append(list);
      continue;
    }
    const para = [];
    for (; i < lines.length && lines[i].trim() && !startsBlock(lines, i); i += 1) para.push(lines[i].trim());
    if (!para.length) { para.push(line.trim()); i += 1; }
    root.append(h("p", {}, inline(para.join("\n"))));
  }
  return root;
}

function startsBlock(lines, i) {
  return /^(\s*(```|~~~)|#{1,6}\s|\s*>|\s*([-*+]|\d+[.)])\s+)/.test(lines[i]) || isTableStart(lines, i);
}

function isTableStart(lines, i) {
  return /^\s*\|.*\|\s*$/.test(lines[i]) && i + 1 < lines.length && /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/.test(lines[i + 1]);
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, i, root) {
  const head = h("tr", {}, cells(lines[i]).map((c) => h("th", { scope: "col" }, inline(c))));
  const body = h("tbody");
  for (i += 2; i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i]); i += 1) {
    body.append(h("tr", {}, cells(lines[i]).map((c) => h("td", {}, inline(c)))));
  }
  root.append(h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), body)));
  return i;
}

const INLINE = /(`+)([\s\S]*?)\1|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s][^*]*?)\*|\[([^\]]+)\]\((\S+?)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])|\n/g;

// Inline markup of one block, as nodes.
export function inline(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    out.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1]) out.append(h("code", {}, m[2]));
    else if (m[3] || m[4]) out.append(h("strong", {}, inline(m[3] || m[4])));
    else if (m[5]) out.append(h("em", {}, inline(m[5])));
    else if (m[6]) out.append(link(m[7], inline(m[6])));
    else if (m[8]) out.append(link(m[8], m[8]));
    else out.append(h("br"));
  }
  out.append(text.slice(last));
  return out;
}

function link(href, label) {
  if (!/^https?:\/\//i.test(href)) return label instanceof Node ? label : document.createTextNode(label);
  return h("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, label);
}
