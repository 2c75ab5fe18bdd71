"""Every word the agent says to the model: the system prompt, observations, re-asks.

Written for small local models too (Qwen2.5-Coder-1.5B processes ~150 prompt tokens/s on 2 cores), so the
system prompt is compact (about 600 tokens) and teaches by one worked example of the loop that includes a
failing first attempt and its fix. Measure changes with ``thinkbox bench reasoning``, not by feel.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from thinkbox.sandbox.types import ExecutionResult, FileInfo

SYSTEM_PROMPT = """\
You answer questions by thinking in Python. You have a persistent Python session: variables and imports \
stay between steps. Installed: numpy, pandas, matplotlib, openpyxl, networkx, sympy and the standard \
library. No internet: pip cannot install anything. The working directory is /workspace. A code line \
starting with ! runs as a shell command (e.g. !ls -l); its output comes back to you.
{files}

Reply with ONE JSON object and nothing else:
{{"thought": "...", "action": "...", "code": "...", "final_answer": "..."}}
- "execute_code": run "code" and see its output. Keep "final_answer" empty.
- "debug_error": the same, to fix the error of the last step.
- "provide_answer": give "final_answer". Keep "code" empty.

Write code for anything computed or checked: arithmetic, money, dates, counting letters or items, data \
files, searching, verifying a claim. Answer directly (provide_answer at once) only for greetings, opinions \
and well-known facts.

Rules:
1. Only what you print() comes back to you: print every value you need to see.
2. Small steps. If the code fails, fix it with debug_error.
3. Answer exactly what was asked, with the value computed in the last output (and units); check \
that they match.
4. In JSON strings write \\n for a new line and \\" for a quote; never use triple quotes.

Example.
User: What is 15% of 2345.50?
{{"thought": "Compute 15% of the price.", "action": "execute_code", "code": "print(round(0.15 * price, 2))", \
"final_answer": ""}}
User: Output:
NameError: name 'price' is not defined
{{"thought": "price was not defined. Define it, then compute.", "action": "debug_error", \
"code": "price = 2345.50\\nprint(round(0.15 * price, 2))", "final_answer": ""}}
User: Output:
351.82
{{"thought": "The output is 351.82.", "action": "provide_answer", "code": "", "final_answer": "351.82"}}
User: Who wrote the play Hamlet?
{{"thought": "A well-known fact.", "action": "provide_answer", "code": "", \
"final_answer": "William Shakespeare"}}"""

ACTION_TEMPLATE = (
    '{"thought": "...", "action": "execute_code", "code": "...", "final_answer": ""} or '
    '{"thought": "...", "action": "provide_answer", "code": "", "final_answer": "..."}'
)


_COMMON = """
{files}

Reply with ONE JSON object and nothing else:
{{"thought": "...", "action": "...",{lang_key} "code": "...", "final_answer": "..."}}
- "execute_code": run "code" and see its output. Keep "final_answer" empty.
- "debug_error": the same, to fix the error of the last step.
- "provide_answer": give "final_answer". Keep "code" empty.{lang_rule}

Write code for anything computed or checked: arithmetic, money, dates, counting letters or items, data \
files, searching, verifying a claim. Answer directly (provide_answer at once) only for greetings, opinions \
and well-known facts.

Rules:
1. Only what you {printer} comes back to you: print every value you need to see.
2. Small steps. If the code fails, fix it with debug_error.
3. Answer exactly what was asked, with the value computed in the last output (and units); check \
that they match.
4. In JSON strings write \\n for a new line and \\" for a quote; never use triple quotes.
"""

_INTROS = {
    "js": """\
You answer questions by thinking in JavaScript. You have a persistent Node.js session: variables stay \
between steps and top-level await works. require() loads Node's built-in modules (fs, path, crypto, ...); \
no npm package is installed and there is no internet. The working directory is /workspace.""",
    "sh": """\
You answer questions by thinking in bash. You have a persistent bash session: variables, functions and the \
working directory stay between steps. coreutils, grep, sed and awk are installed; $((...)) is integer \
arithmetic only, use awk for decimals. No internet. The working directory is /workspace.""",
    "auto": """\
You answer questions by thinking in code, in one of three persistent sessions on the same files, each \
keeping its variables between steps: "py" (Python: numpy, pandas, matplotlib, openpyxl, networkx, sympy), \
"js" (Node.js, built-in modules only) and "sh" (bash: coreutils, grep, sed, awk). No internet. The working \
directory is /workspace. Python suits numbers and data best.""",
}
_EXAMPLES = {
    "js": """
Example.
User: What is 15% of 2345.50?
{{"thought": "Compute 15% of the price.", "action": "execute_code", \
"code": "console.log((0.15 * price).toFixed(2))", "final_answer": ""}}
User: Output:
ReferenceError: price is not defined
{{"thought": "price was not defined. Define it, then compute.", "action": "debug_error", \
"code": "const price = 2345.50\\nconsole.log((0.15 * price).toFixed(2))", "final_answer": ""}}
User: Output:
351.82
{{"thought": "The output is 351.82.", "action": "provide_answer", "code": "", "final_answer": "351.82"}}""",
    "sh": """
Example.
User: What is 15% of 2345.50?
{{"thought": "Compute 15% of the price.", "action": "execute_code", "code": "echo $((15 * 2345.50 / 100))", \
"final_answer": ""}}
User: Output:
bash: 15 * 2345.50 / 100: syntax error: invalid arithmetic operator (error token is ".50 / 100")
{{"thought": "Bash arithmetic has no decimals. Use awk.", "action": "debug_error", \
"code": "awk 'BEGIN {{ printf \\"%.2f\\\\n\\", 0.15 * 2345.50 }}'", "final_answer": ""}}
User: Output:
351.82
{{"thought": "The output is 351.82.", "action": "provide_answer", "code": "", "final_answer": "351.82"}}""",
    "auto": """
Examples.
User: What is 15% of 2345.50?
{{"thought": "Compute 15% of the price.", "action": "execute_code", "language": "py", \
"code": "print(round(0.15 * 2345.50, 2))", "final_answer": ""}}
User: Output:
351.82
{{"thought": "The output is 351.82.", "action": "provide_answer", "language": "", "code": "", \
"final_answer": "351.82"}}
User: Is 'level' a palindrome?
{{"thought": "Compare the word with its reverse.", "action": "execute_code", "language": "js", \
"code": "const w = 'level'\\nconsole.log(w === [...w].reverse().join(''))", "final_answer": ""}}
User: Output:
true
{{"thought": "It is.", "action": "provide_answer", "language": "", "code": "", "final_answer": "yes"}}
User: How many lines does notes.txt have?
{{"thought": "Count them.", "action": "execute_code", "language": "sh", "code": "wc -l < notes.txt", \
"final_answer": ""}}
User: Output:
12
{{"thought": "12 lines.", "action": "provide_answer", "language": "", "code": "", "final_answer": "12"}}""",
}
"""agent.language -> the start and the worked examples of its system prompt, around :data:`_COMMON` (py:
:data:`SYSTEM_PROMPT`, measured with bench reasoning; these are not measured yet)."""
_FILLS = {
    "js": {"lang_key": "", "lang_rule": "", "printer": "console.log()"},
    "sh": {"lang_key": "", "lang_rule": "", "printer": "echo or printf"},
    "auto": {
        "lang_key": ' "language": "py",',
        "lang_rule": '\n- "language": "py", "js" or "sh": the language of "code"; "" when answering.',
        "printer": "print (console.log, echo)",
    },
}


NETWORK = (
    "Internet only through a proxy, to the hosts your administrator allowed and the package index: a "
    "refused request says why. !pip install NAME installs a package, importable at once."
)
"""Said instead of 'no internet' when the session has the service's egress proxy."""
_NO_NETWORK = (
    "No internet: pip cannot install anything.",
    "no npm package is installed and there is no internet.",
    "No internet.",
)


def system_prompt(
    files: Sequence[FileInfo] = (), language: str = "py", extra: str = "", *, network: bool = False
) -> str:
    """The system prompt, listing the workspace's files (they are what data questions are about).

    ``language``: agent.language (py, js, sh, or auto: the model names each step's language); ``extra``:
    lines after the files (the service's saved tools); ``network``: the session goes out through the
    service's egress proxy (:data:`NETWORK` replaces the sentence saying there is no internet).
    """
    listing = describe_files(files) + (f"\n{extra}" if extra else "")
    if language == "py":
        text = SYSTEM_PROMPT.format(files=listing)
    else:
        template = _INTROS[language] + _COMMON + _EXAMPLES[language]
        text = template.format(files=listing, **_FILLS[language])
    if network:
        for sentence in _NO_NETWORK:
            if sentence in text:
                return text.replace(sentence, NETWORK if language == "py" else NETWORK.split(": a ")[0] + ".")
    return text


def describe_files(files: Sequence[FileInfo]) -> str:
    shown = [f for f in files if not f.is_dir and not is_hidden(f.path)]
    if not shown:
        return "The workspace has no files."
    listed = ", ".join(f"{f.path} ({_size(f.size)})" for f in shown[:30])
    more = f" and {len(shown) - 30} more" if len(shown) > 30 else ""
    return f"Files in /workspace: {listed}{more}. Read them with pandas (read_excel, read_csv) or open()."


def is_hidden(path: str) -> bool:
    """Dot files and anything under a dot directory (caches, configs) are not shown to the model."""
    return any(part.startswith(".") for part in path.split("/"))


def reask(problem: str) -> str:
    """The user message after a reply that was not a valid action."""
    return f"Your reply could not be used: {problem}. Reply with one JSON object only:\n{ACTION_TEMPLATE}"


def repeated_code(step: int) -> str:
    """Why a reply that resends failed code is refused (the re-ask adds the action template)."""
    return (
        f"this is the code of step {step}, unchanged, and it failed there; running it again would fail the "
        "same way. Read that error and change the code, or try another approach"
    )


def assigned_names(code: str) -> list[str]:
    """The plain names the code's last statement assigns (``x = ...``, ``a, b = ...``, ``n += 1``).

    Small models often end with ``result = 504 * 766`` and print nothing, then guess the answer; the loop
    shows these names' values instead (see :func:`peek_code`)."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return []
    if not body:
        return []
    last = body[-1]
    targets: list[ast.expr]
    if isinstance(last, ast.Assign):
        targets = list(last.targets)
    elif isinstance(last, (ast.AugAssign, ast.AnnAssign)) and getattr(last, "value", None) is not None:
        targets = [last.target]
    else:
        return []
    names: list[str] = []
    for target in targets:
        elements = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
        names += [e.id for e in elements if isinstance(e, ast.Name) and e.id not in names]
    return names[:5]


def defined_names(code: str) -> list[str]:
    """The functions and classes the code defines at its top level, when it ends with a definition.

    A step that only defines a function prints nothing; told just that, the 1.5B model sent the same
    definition again until the step limit (a HumanEval item, 10 times). It is told what it defined and to
    test it instead."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    if not body or not isinstance(body[-1], kinds):
        return []
    return [node.name for node in body if isinstance(node, kinds)][:5]


def is_literal(node: ast.expr) -> bool:
    """``node`` is a Python literal (what ``ast.literal_eval`` reads): a value code can be checked with."""
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def looks_intermediate(assigned: str) -> bool:
    """Whether values read back (``name = repr`` lines) are working data, not an answer: a nested
    container (a grid, rows of a table) or a multi-line value. Invited to answer after a read-back of
    ``grid = [[...]]``, the 1.5B model answered 19 of 20 grid shortest-path questions with that line."""
    lines = assigned.strip().splitlines()
    if len(lines) > 1 and not all(" = " in line for line in lines):
        return True  # a value whose repr spans lines (a DataFrame)
    values = [line.partition(" = ")[2] for line in lines]
    return any(v.startswith(("[[", "[(", "[{", "((", "({", "{")) for v in values)


def peek_code(names: Sequence[str], width: int = 300) -> str:
    """Code that prints ``name = repr(value)`` (cut to ``width``) for each name, defining nothing."""
    pairs = ", ".join(f"({n!r}, {n})" for n in names)
    return f'print("\\n".join(f"{{k}} = {{v!r:.{width}}}" for k, v in [{pairs}]))'


def observation(
    result: ExecutionResult,
    *,
    max_chars: int,
    timeout_s: float,
    restarted: bool = False,
    figures: int = 0,
    assigned: str = "",
    defined: Sequence[str] = (),
    note: str = "",
) -> str:
    """What the model is told about one execution, cut to ``max_chars`` (head and tail kept).

    ``assigned``: when the code printed nothing, the values its last line assigned (``name = value``
    lines), so that the model reads the computed value instead of guessing it. ``defined``: the functions
    and classes the code ended by defining (see :func:`defined_names`). ``note``: what the host adds about
    the execution (the service: whether the tool ``save_tool`` asked for was saved)."""
    parts: list[str] = []
    joiner = "\n" if result.stdout and not result.stdout.endswith("\n") else ""
    output = result.stdout + joiner + result.stderr
    if output.strip():
        parts.append(output.rstrip("\n"))
    if result.result is not None:
        parts.append(f"Value: {result.result}")
    if figures:
        parts.append(f"({figures} figure{'s' if figures > 1 else ''} shown to the user)")
    if result.killed:
        parts.append(
            "The interpreter was killed"
            + (f" after the {timeout_s:g} s time limit" if result.timed_out else "")
            + ". All variables and imports are lost; files in /workspace remain."
            + (" A fresh interpreter was started: import and define again what you need." * restarted)
        )
    elif result.timed_out:
        parts.append(
            f"The code ran longer than the {timeout_s:g} s time limit and was interrupted. Variables from "
            "earlier steps are kept. Make the code faster or do less per step."
        )
    elif result.error is not None:
        parts.append(_error_text(result))
    if note:
        parts.append(note)
    intermediate = False
    if not parts and assigned.strip():
        parts.append(f"(nothing was printed; the last line assigned)\n{assigned.strip()}")
        intermediate = looks_intermediate(assigned)
    if not parts and defined:
        names = ", ".join(defined)
        test = "Test it: call it on an example and print() the result"
        return f"Output:\n(nothing was printed; defined: {names}. {test})"
    if not parts:
        parts.append(
            "(nothing was printed, so you have not seen any value yet: print() the values you need to see "
            "before you answer)"
        )
        return "Output:\n" + "\n".join(parts)
    text = cut_middle("\n".join(parts), max_chars)
    if intermediate:  # a grid, a table: small models answered with it as it was
        text += "\nThat is an intermediate value, not the answer: continue; print() what the question asks."
    elif result.ok:
        text += "\nIf this answers the question, reply with provide_answer and this value; else continue."
    return "Output:\n" + text


def _error_text(result: ExecutionResult) -> str:
    assert result.error is not None
    head = f"{result.error.type}: {result.error.message}"
    lines = [line for line in result.error.traceback.strip().splitlines() if line.strip()]
    if not lines:
        return head
    tail = lines[-6:]
    if tail[-1].strip() != head.strip():
        tail.append(head)
    return "\n".join(tail)


def cut_middle(text: str, max_chars: int) -> str:
    """``text`` if it fits, else its head and tail with a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - 60, 20)
    head, tail = text[: keep * 2 // 3], text[-(keep // 3) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters cut here ...]\n{tail}"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
