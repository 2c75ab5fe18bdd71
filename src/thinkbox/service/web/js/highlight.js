// Python syntax highlighting as <span> nodes (text nodes only: the code is never parsed as HTML).

import { h } from "./dom.js";

const KEYWORDS = new Set(("False None True and as assert async await break class continue def del elif else " +
  "except finally for from global if import in is lambda nonlocal not or pass raise return try while with " +
  "yield match case").split(" "));
const BUILTINS = new Set(("print len range int float str list dict set tuple sum min max abs round sorted " +
  "enumerate zip map filter open isinstance type any all").split(" "));
const TOKENS = /(#[^\n]*)|([rbfuRBFU]{0,2}(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))|(\b\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?j?\b)|(@?[A-Za-z_]\w*)/g;

export function highlight(code) {
  const el = h("code", { class: "language-python" });
  let last = 0;
  for (const m of code.matchAll(TOKENS)) {
    el.append(code.slice(last, m.index));
    last = m.index + m[0].length;
    let kind = null;
    if (m[1]) kind = "comment";
    else if (m[2]) kind = "string";
    else if (m[3]) kind = "number";
    else if (KEYWORDS.has(m[4])) kind = "keyword";
    else if (BUILTINS.has(m[4])) kind = "builtin";
    else if (m[4].startsWith("@")) kind = "decorator";
    el.append(kind ? h("span", { class: `tok-${kind}` }, m[0]) : m[0]);
  }
  el.append(code.slice(last));
  return el;
}
