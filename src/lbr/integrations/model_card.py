"""The model card (README.md) of a saved lbr model: base model, stage settings, data, results.

Everything comes from lbr_config.json (the ``model`` config and the ``stages`` records the
trainer appends) plus optional evaluation results, so the card never disagrees with what was
actually run. peft writes its own README.md template into an adapter directory; this one
replaces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lbr.errors import InputError

LBR_CONFIG_NAME = "lbr_config.json"  # mirrors lbr.modeling.lbr_model (not imported: torch-free)
METRIC_ORDER = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10", "MAP@100")
# Settings shown first in each stage table: the method's knobs, then the data.
STAGE_KEYS_FIRST = (
    "corpus",
    "pairs",
    "ib_weight",
    "know_weight",
    "target",
    "gen_weight",
    "gen_target",
    "temperature",
    "query_instruction",
    "documents",
    "segments",
    "pairs_count",
)
STAGE_TITLES = {
    "stage1": "Stage 1: Learn (L_know + lambda * L_IB)",
    "stage2": "Stage 2: Represent (InfoNCE + mu * L_gen)",
}


def write_model_card(model_dir: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model_dir/README.md``.

    Args:
        model_dir: an lbr model directory.
        metadata: values on top of ``model_dir/lbr_config.json`` (which is read when present):
            ``model`` (the ModelConfig dict), ``stages``, ``query_instruction``, ``weights``,
            and optionally ``name``, ``results`` (an ``lbr evaluate --output`` record, a list of
            them, or paths to such JSON files) and ``notes`` (free text).
    Returns:
        the path written.
    """
    model_dir = Path(model_dir)
    record: dict[str, Any] = {}
    config_file = model_dir / LBR_CONFIG_NAME
    if config_file.is_file():
        try:
            record = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(config_file, f"invalid JSON: {err.msg}", line=err.lineno) from None
    record.update(metadata or {})
    text = render_model_card(record, name=str(record.get("name") or model_dir.resolve().name))
    path = model_dir / "README.md"
    tmp = path.with_name("README.md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(results: Any) -> list[dict[str, Any]]:
    """Normalise ``results`` (record, list of records, path or list of paths) to records."""
    if results is None:
        return []
    items = results if isinstance(results, Sequence) and not isinstance(results, str) else [results]
    records = []
    for item in items:
        if isinstance(item, Mapping):
            records.append(dict(item))
            continue
        path = Path(item)
        if not path.is_file():
            raise InputError(path, "results file does not exist")
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON: {err.msg}", line=err.lineno) from None
        records.extend(load_results(value if isinstance(value, list) else [value]))
    for record in records:
        if not isinstance(record.get("metrics"), Mapping):
            raise InputError(None, f"a results record has no 'metrics' object: {sorted(record)}")
    return records


def _is_hub_id(name: str) -> bool:
    # "org/name" with no local path behind it; local paths must not leak into front matter.
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value)
    else:
        text = str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text else '`""`'


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _stage_section(stage: Mapping[str, Any]) -> list[str]:
    name = str(stage.get("stage", "stage"))
    settings = {key: value for key, value in stage.items() if key not in ("stage", "train", "final")}
    first = [key for key in STAGE_KEYS_FIRST if key in settings]
    ordered = first + [key for key in settings if key not in first]
    lines = [f"### {STAGE_TITLES.get(name, name)}", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {_cell(settings[key])} |" for key in ordered]
    for group in ("train", "final"):
        if isinstance(stage.get(group), Mapping):
            lines += [f"| {key} | {_cell(value)} |" for key, value in _flatten(stage[group], f"{group}.").items()]
    return [*lines, ""]


def _results_section(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return [
            "No evaluation results were recorded with this model. Measure it with",
            "`lbr evaluate --model <this directory> --data <BEIR directory>` and pass the JSON to",
            "`lbr.integrations.write_model_card(dir, {'results': 'results.json'})`.",
            "",
        ]
    names = [name for name in METRIC_ORDER if any(name in r["metrics"] for r in results)]
    names += sorted({name for r in results for name in r["metrics"]} - set(names))
    lines = [
        "| data | split | queries | documents | " + " | ".join(names) + " |",
        "|---|---|---:|---:|" + "---:|" * len(names),
    ]
    for r in results:
        values = " | ".join(
            f"{100 * r['metrics'][name]:.2f}" if isinstance(r["metrics"].get(name), (int, float)) else "-"
            for name in names
        )
        lines.append(
            f"| {r.get('data', '?')} | {r.get('split', '?')} | {r.get('num_queries', '?')} | "
            f"{r.get('num_docs', '?')} | {values} |"
        )
    return [*lines, "", "Metrics in percent, computed by `lbr evaluate` (trec_eval definitions).", ""]


def render_model_card(record: Mapping[str, Any], name: str) -> str:
    """The README.md text for an lbr_config.json-shaped ``record``."""
    model = dict(record.get("model") or {})
    base = str(model.get("model", "unknown"))
    stages = [s for s in record.get("stages") or [] if isinstance(s, Mapping)]
    results = load_results(record.get("results"))
    instruction = str(record.get("query_instruction") or "")
    weights = record.get("weights", "unknown")

    front = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "tags:"]
    front += ["- lbr", "- sentence-transformers", "- feature-extraction", "- learn-before-represent"]
    if _is_hub_id(base):
        front.append(f"base_model: {base}")
    front.append("---")

    lines = [*front, "", f"# {name}", ""]
    lines += [
        f"A domain embedding model made with lbr (Learn Before Represent) from "
        f"`{base}`. A text x is embedded by one causal forward pass over `[x ; <lbr_0> .. "
        f"<lbr_{int(model.get('num_bottleneck_tokens', 1)) - 1}>]`; the embedding is the normalised "
        "mean of the final hidden states at the bottleneck tokens.",
        "",
        "## Usage",
        "",
        "```python",
        "from lbr.modeling import LBRModel",
        "",
        'model = LBRModel.load("path/to/this/model")',
        'q_emb = model.encode_query(["a question"])',
        'd_emb = model.encode_document(["a passage"])',
        "",
        "# sentence-transformers (needs `pip install lbr`; ST 6 asks for trust_remote_code",
        "# to import the lbr module class):",
        "from sentence_transformers import SentenceTransformer",
        "",
        'st = SentenceTransformer("path/to/this/model", trust_remote_code=True)',
        'st.encode_query(["a question"])  # applies the saved "query" prompt',
        "```",
        "",
        "## Model",
        "",
        "| setting | value |",
        "|---|---|",
        f"| base model | {_cell(base)} |",
        f"| weights in this directory | {_cell(weights)} |",
        f"| query instruction | {_cell(instruction)} |",
    ]
    if record.get("hidden_size"):
        lines.append(f"| embedding dimension | {_cell(record['hidden_size'])} |")
    lines += [f"| {key} | {_cell(value)} |" for key, value in model.items() if key != "model"]
    lines += ["", "## Training", ""]
    if stages:
        lines += [f"Stages run, in order: {', '.join(str(s.get('stage', '?')) for s in stages)}.", ""]
        for stage in stages:
            lines += _stage_section(stage)
    else:
        lines += ["No lbr training stage was recorded: this is the base model with bottleneck tokens.", ""]
    lines += ["## Evaluation", "", *_results_section(results)]
    if record.get("notes"):
        lines += ["## Notes", "", str(record["notes"]), ""]
    return "\n".join(lines).rstrip() + "\n"
