"""Wall times of `lbr learn` -> `lbr represent` -> `lbr encode` on the embedded SmolLM2 default.

    .venv/bin/python benchmarks/walltimes.py            # writes docs/WALLTIMES.md

Each command runs as a real subprocess, exactly as a user would type it; the time includes
model loading. Data: the medical benchmark (`lbr data build medical`, built if missing).
"""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LBR = [sys.executable, "-m", "lbr"]


def run(args: list[str]) -> float:
    print("$ lbr " + " ".join(shlex.quote(a) for a in args), flush=True)
    started = time.perf_counter()
    subprocess.run([*LBR, *args], check=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> int:
    data = ROOT / "data" / "medical"
    work = ROOT / "runs" / "walltimes"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if not (data / "DATASHEET.md").exists():
        run(["data", "build", "medical", "--out", str(data.relative_to(ROOT))])
    rel = lambda p: str(Path(p).relative_to(ROOT))  # noqa: E731 - keeps the printed commands short
    # A small stage-1 corpus: the knowledge records of the first 300 documents.
    corpus_ids = [json.loads(line)["_id"] for line in (data / "corpus.jsonl").read_text().splitlines()[:300]]
    wanted = set(corpus_ids)
    knowledge = [
        line for line in (data / "knowledge.open.jsonl").read_text().splitlines() if json.loads(line)["id"] in wanted
    ]
    (work / "corpus.jsonl").write_text("\n".join(knowledge) + "\n")
    commands = [
        (
            "learn",
            [
                "learn",
                "--corpus",
                rel(work / "corpus.jsonl"),
                "--output",
                rel(work / "s1"),
                "--max-steps",
                "20",
                "--batch-size",
                "16",
                "--no-progress",
            ],
        ),
        (
            "represent",
            [
                "represent",
                "--model",
                rel(work / "s1"),
                "--pairs",
                rel(data / "pairs.train.jsonl"),
                "--output",
                rel(work / "s2"),
                "--max-steps",
                "20",
                "--batch-size",
                "16",
                "--no-progress",
            ],
        ),
        (
            "encode",
            [
                "encode",
                "--model",
                rel(work / "s2"),
                "--input",
                rel(data / "corpus.jsonl"),
                "--output",
                rel(work / "corpus.npy"),
                "--no-progress",
            ],
        ),
    ]
    rows = []
    for name, args in commands:
        seconds = run(args)
        rows.append((name, "lbr " + " ".join(args), seconds))
    s1_log = [json.loads(line) for line in (work / "s1" / "train_log.jsonl").read_text().splitlines()]
    s2_log = [json.loads(line) for line in (work / "s2" / "train_log.jsonl").read_text().splitlines()]
    lines = [
        "# Wall times: learn -> represent -> encode on the embedded default",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on this machine: "
        f"{platform.processor() or platform.machine()}, 2 CPU cores, no GPU, Python {platform.python_version()}. "
        "SmolLM2-135M-Instruct (dequantised GGUF, float32), LoRA r16 on every linear layer, k = 4, "
        "gradient checkpointing on. Each time includes starting Python and loading the model.",
        "",
        "Command: `.venv/bin/python benchmarks/walltimes.py`",
        "",
        "| step | command | wall time |",
        "|---|---|---|",
        *(f"| {name} | `{command}` | {seconds:.0f} s |" for name, command, seconds in rows),
        "",
        f"- stage 1: {len(s1_log)} steps of 16 segments (<= 64 tokens) from {len(knowledge)} HPO knowledge records; "
        f"mean {sum(r['tokens'] for r in s1_log) / len(s1_log):.0f} text tokens a step; "
        f"loss {s1_log[0]['loss']:.2f} -> {s1_log[-1]['loss']:.2f} (L_know {s1_log[-1].get('know', 0):.2f}, "
        f"L_IB {s1_log[-1].get('ib', 0):.2f}).",
        f"- stage 2: {len(s2_log)} steps of 16 pairs with one hard negative each, mu = 0.1; "
        f"loss {s2_log[0]['loss']:.2f} -> {s2_log[-1]['loss']:.2f}.",
        "- encode: the 2,000 documents of the medical corpus.",
        "",
    ]
    (ROOT / "docs" / "WALLTIMES.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
