"""Shell commands in a Python session, three ways, measured with the embedded model (issue 16, item 8).

Arms (the same ``thinkbox ask --json`` run, one question at a time, one model process at a time):

- ``py``: the Python system prompt without any word about ``!`` lines (the sentence below is taken out
  if the prompt has it);
- ``py+bang``: the Python prompt with :data:`BANG` after its sentence about the working directory (put in
  if the prompt lacks it);
- ``auto``: agent.language=auto, where the model names each step's language and ``sh`` steps run in a
  bash session on the same files (the separate-action form);
- ``py+control`` (not run by default: ``--arms py+control``): the ``py`` prompt with :data:`CONTROL`, a
  sentence of about the same length that says nothing new, to tell what any change of the prompt does to a
  greedy small model from what the words about ``!`` do.

Each question's files are built here from a fixed seed, and its true answer is computed here from those
files with Python's standard library, never by the agent. Results go to ``OUT/results.jsonl`` (one line
per run; a rerun skips the runs already there), each run's events to ``OUT/runs/``, and the table to
``OUT/report.md``.

    .venv/bin/python docs/bench/shell/run.py   (from the repository root)

The environment's THINKBOX_* settings are passed on (set THINKBOX_MODEL__TIMEOUT_S on a loaded machine).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARMS = ("py", "py+bang", "auto")
REPORTED = (*ARMS, "py+control")
ANCHOR = "The working directory is /workspace."
BANG = "A code line starting with ! runs as a shell command (e.g. !ls -l); its output comes back to you."
CONTROL = "Files in /workspace stay there between steps, and so do the files that your code writes."

# Runs the CLI with the arm's prompt: argv[1] is the arm, the rest is thinkbox's command line.
LAUNCH = f"""
import sys
from thinkbox.agent import prompts
arm = sys.argv.pop(1)
ANCHOR, ADDED = {ANCHOR!r}, {{"py+bang": {BANG!r}, "py+control": {CONTROL!r}}}
text = prompts.SYSTEM_PROMPT.replace(" " + ADDED["py+bang"], "")
if arm in ADDED:
    assert ANCHOR in text, "the prompt's sentence about the working directory moved"
    text = text.replace(ANCHOR, ANCHOR + " " + ADDED[arm], 1)
prompts.SYSTEM_PROMPT = text
sys.argv[0] = "thinkbox"
from thinkbox.cli.app import main
main()
"""

# fmt: off
WORDS = [
    "river", "stone", "cloud", "garden", "quiet", "morning", "paper", "window", "silver", "bridge",
    "lantern", "orchard", "meadow", "harbor", "candle", "thunder", "violet", "marble", "compass", "ribbon",
    "forest", "meadow-lark", "north-east", "well-known", "mid-day",
]
# fmt: on


# -- the questions' files and true answers ---------------------------------------------------------
def build_words(d: Path, rng: random.Random) -> Any:
    lines = []
    for _ in range(97):
        n = rng.randint(0, 19)
        sep = rng.choice([" ", " ", "  ", "\t"])
        lines.append(sep.join(rng.choice(WORDS) for _ in range(n)))
    text = "\n".join(lines) + "\n"
    (d / "essay.txt").write_text(text)
    return len(text.split())


def build_csv_count(d: Path, rng: random.Random) -> Any:
    kinds = {".csv": 13, ".txt": 6, ".json": 5, ".md": 4, ".log": 3, ".tsv": 3}
    stems = ["sales", "stock", "users", "orders", "budget", "visits", "report", "zones", "weather", "notes"]
    made: set[str] = set()
    for ext, n in kinds.items():
        while sum(1 for m in made if m.endswith(ext)) < n:
            made.add(f"{rng.choice(stems)}_{rng.randint(1, 99):02d}{ext}")
    for name in made:
        body = "id,value\n" + "".join(f"{i},{rng.randint(0, 999)}\n" for i in range(rng.randint(3, 40)))
        (d / name).write_text(body)
    return sum(1 for p in d.iterdir() if p.suffix == ".csv")


def build_largest(d: Path, rng: random.Random) -> Any:
    sizes = {"notes.txt": 3_210, "photo.jpg": 41_070, "scan.pdf": 41_110, "data.csv": 28_400,
             "slides.pptx": 19_876, "song.mp3": 39_990, "readme.md": 812, "budget.xlsx": 12_345}  # fmt: skip
    for name, size in sizes.items():
        (d / name).write_bytes(rng.randbytes(size))
    return max(d.iterdir(), key=lambda p: p.stat().st_size).name


def build_sha256(d: Path, rng: random.Random) -> Any:
    data = rng.randbytes(200_000)
    (d / "firmware.bin").write_bytes(data)
    return hashlib.sha256(data).hexdigest()[:12]


def build_tar_files(d: Path, rng: random.Random) -> Any:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for folder in ["backup", "backup/2024", "backup/2024/photos", "backup/2025", "backup/config"]:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            for i in range(rng.randint(2, 7)):
                body = rng.randbytes(rng.randint(10, 3000))
                info = tarfile.TarInfo(f"{folder}/file_{i}.dat")
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    (d / "backup.tar.gz").write_bytes(buf.getvalue())
    with tarfile.open(d / "backup.tar.gz") as tar:
        return sum(1 for m in tar.getmembers() if m.isfile())


def build_size_bytes(d: Path, rng: random.Random) -> Any:
    (d / "video.mp4").write_bytes(rng.randbytes(1_318_447))
    return (d / "video.mp4").stat().st_size


def build_zip_subfolder(d: Path, rng: random.Random) -> Any:
    with zipfile.ZipFile(d / "project.zip", "w") as z:
        for folder, n in [("project/src", 5), ("project/docs", 4), ("project/tests", 3)]:
            for i in range(n):
                body = "".join(rng.choice("abcdefgh \n") for _ in range(rng.randint(200, 5000)))
                z.writestr(f"{folder}/part_{i}.{'md' if 'docs' in folder else 'py'}", body)
        z.writestr("project/README.md", "# project\n" * 40)
    with zipfile.ZipFile(d / "project.zip") as z:
        return sum(i.file_size for i in z.infolist() if i.filename.startswith("project/docs/"))


def build_grep_line(d: Path, rng: random.Random) -> Any:
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN"]
    msgs = ["request served", "cache refreshed", "user logged in", "slow query", "job queued", "retrying"]
    lines = [
        f"2026-11-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
        f"{rng.randint(0, 59):02d} {rng.choice(levels)} {rng.choice(msgs)} id={rng.randint(1000, 9999)}"
        for _ in range(480)
    ]
    target = "2026-11-17 03:41:09 ERROR payment gateway timeout after 30000 ms order=58213"
    lines.insert(rng.randint(100, 400), target)
    (d / "server.log").write_text("\n".join(lines) + "\n")
    return target


BUILDERS = {name[len("build_") :]: fn for name, fn in globals().items() if name.startswith("build_")}


# -- checking an answer ----------------------------------------------------------------------------
def correct(kind: str, answer: str, truth: Any) -> bool:
    """Whether ``answer`` states ``truth``: the integer among the answer's numbers (thousands separators
    allowed), the file's name, the hex prefix (any case), or the log line's time and message."""
    if kind == "integer":
        numbers = re.findall(r"\d[\d,_ ]*\d|\d", answer)
        return any(int(re.sub(r"[,_ ]", "", n)) == truth for n in numbers)
    if kind == "name":
        return truth in answer
    if kind == "hex":
        return truth in answer.lower()
    if kind == "line":
        stamp, _, rest = truth.partition(" ERROR ")
        return stamp in answer and rest in answer
    raise ValueError(kind)


def shell_use(events: list[dict[str, Any]]) -> str:
    """How the run reached a shell: sh steps (auto), ``!`` lines, subprocess/os.system, or not at all."""
    codes = [e for e in events if e.get("type") == "code_started"]
    kinds = set()
    for e in codes:
        if e.get("language") == "sh":
            kinds.add("sh")
        elif any(line.lstrip().startswith("!") for line in e["code"].splitlines()):
            kinds.add("bang")
        elif re.search(r"\bsubprocess\b|os\.system|os\.popen", e["code"]):
            kinds.add("subprocess")
    return "+".join(sorted(kinds)) or "none"


# -- running ---------------------------------------------------------------------------------------
def run_one(q: dict[str, Any], arm: str, files: list[Path], out: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("THINKBOX_MODEL__TIMEOUT_S", "900")
    env.setdefault("THINKBOX_AGENT__MAX_WALL_S", "1200")
    env["THINKBOX_AGENT__LANGUAGE"] = "auto" if arm == "auto" else "py"
    cmd = [sys.executable, "-c", LAUNCH, arm, "ask", "--json", "--no-serve", q["question"]]
    for f in files:
        cmd += ["--file", str(f)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    name = f"{q['id']}.{arm.replace('+', '-')}"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{name}.jsonl").write_text(proc.stdout)
    if proc.stderr.strip():
        (out / "runs" / f"{name}.stderr").write_text(proc.stderr)
    final = next((e for e in reversed(events) if e.get("type") == "final_answer"), None)
    tokens = max((e.get("tokens", 0) for e in events if isinstance(e.get("tokens"), int)), default=0)
    steps = max((e.get("step", 0) for e in events if isinstance(e.get("step"), int)), default=0)
    answer = final["answer"] if final else ""
    return {
        "id": q["id"],
        "arm": arm,
        "answer": answer,
        "truth": q["truth"],
        "correct": final is not None and correct(q["check"], answer, q["truth"]),
        "ended": events[-1].get("type") if events else f"no events (exit {proc.returncode})",
        "steps": final["steps"] if final else steps,
        "tokens": final["tokens"] if final else tokens,
        "seconds": round(seconds, 1),
        "shell": shell_use(events),
    }


def report(rows: list[dict[str, Any]], questions: list[dict[str, Any]]) -> str:
    out = ["| arm | correct | median steps | tokens (sum) | median tokens | seconds (sum) | median s | "
           "shell used |", "|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for arm in REPORTED:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        used = sum(1 for r in mine if r["shell"] != "none")
        out.append(
            f"| {arm} | {sum(r['correct'] for r in mine)}/{len(mine)} | "
            f"{statistics.median(r['steps'] for r in mine):g} | {sum(r['tokens'] for r in mine)} | "
            f"{statistics.median(r['tokens'] for r in mine):g} | {sum(r['seconds'] for r in mine):.0f} | "
            f"{statistics.median(r['seconds'] for r in mine):.0f} | {used}/{len(mine)} |"
        )
    arms = [a for a in REPORTED if any(r["arm"] == a for r in rows)]
    out += ["", "| question | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for q in questions:
        cells = []
        for arm in arms:
            r = next((r for r in rows if r["id"] == q["id"] and r["arm"] == arm), None)
            cells.append(
                "" if r is None else
                f"{'ok' if r['correct'] else 'wrong'} ({r['steps']} steps, {r['shell']})"
            )  # fmt: skip
        out.append(f"| {q['id']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="results.jsonl, runs/ and report.md go here")
    parser.add_argument("--files", type=Path, default=Path("/tmp/thinkbox-shell-bench"), help="built files")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--only", default="", help="comma-separated question ids (default: all)")
    args = parser.parse_args()
    questions = json.loads((HERE / "questions.json").read_text())
    if args.only:
        questions = [q for q in questions if q["id"] in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    for q in questions:
        folder = args.files / q["id"]
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        q["truth"] = BUILDERS[q["id"]](folder, random.Random(f"shell-bench-{q['id']}"))
        files = sorted(folder.iterdir())
        for arm in args.arms.split(","):
            if any(r["id"] == q["id"] and r["arm"] == arm for r in done):
                continue
            row = run_one(q, arm, files, args.out)
            done.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    (args.out / "report.md").write_text(report(done, questions))
    print(report(done, questions))


if __name__ == "__main__":
    main()
