"""The model card records the base model, both stages' settings, data and results."""

from __future__ import annotations

import json
import re

import pytest

from lbr.errors import InputError
from lbr.integrations import write_model_card


def test_card_replaces_peft_readme_and_records_stages(lbr_adapter_dir, tiny_model_dir):
    card = (lbr_adapter_dir / "README.md").read_text()
    assert "## More Information" not in card  # peft's template section is gone
    assert card.startswith("---\nlibrary_name: sentence-transformers")
    assert f"| base model | `{tiny_model_dir}` |" in card
    assert "base_model:" not in card  # a local path is not a Hub id
    assert "| weights in this directory | `adapter` |" in card
    assert "| num_bottleneck_tokens | `3` |" in card
    assert "| query instruction | `find the ` |" in card
    stage1 = card.index("### Stage 1: Learn")
    stage2 = card.index("### Stage 2: Represent")
    assert stage1 < stage2
    assert "| corpus | `data/medical/knowledge.open.jsonl` |" in card[stage1:stage2]
    assert "| ib_weight | `1` |" in card[stage1:stage2]
    assert "| train.max_steps | `40` |" in card[stage1:stage2]
    assert "| pairs | `data/medical/pairs.train.jsonl` |" in card[stage2:]
    assert "| gen_weight | `0.1` |" in card[stage2:]
    assert "| pairs_count | `64` |" in card[stage2:]
    assert "No evaluation results were recorded" in card


def test_card_with_results_file_and_hub_base(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    config = {"format_version": 1, "weights": "merged", "model": {"model": "HuggingFaceTB/SmolLM2-135M"}}
    (model_dir / "lbr_config.json").write_text(json.dumps(config))
    result = {
        "model": "runs/x",
        "data": "data/medical",
        "split": "test",
        "num_queries": 50,
        "num_docs": 1000,
        "metrics": {"nDCG@10": 0.41234, "Recall@10": 0.6, "Recall@100": 0.9, "MRR@10": 0.5, "MAP@100": 0.3},
    }
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(result))
    card = write_model_card(model_dir, {"results": str(results_file), "name": "medical-lbr"}).read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M" in card
    assert "# medical-lbr" in card
    assert "No lbr training stage was recorded" in card
    row = next(line for line in card.splitlines() if line.startswith("| data/medical"))
    assert re.search(r"\| 50 \| 1000 \| 41\.23 \| 60\.00 \| 90\.00 \| 50\.00 \| 30\.00 \|$", row)


def test_bad_results_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_model_card(tmp_path, {"results": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x"}')
    with pytest.raises(InputError, match="no 'metrics'"):
        write_model_card(tmp_path, {"results": str(bad)})
    assert not (tmp_path / "README.md").exists()


def test_hook_inside_save_writes_files_only_and_uses_the_record(tmp_path, lbr_adapter_dir):
    """LBRModel.save calls write_ecosystem_files on its temporary directory, before lbr_config.json
    exists, then moves the files one by one: so the record must come in, and no subdirectory out."""
    from lbr.integrations import write_ecosystem_files
    from lbr.modeling import LBRModel

    model = LBRModel.load(lbr_adapter_dir)
    record = json.loads((lbr_adapter_dir / "lbr_config.json").read_text())
    tmp = tmp_path / ".save.tmp"
    tmp.mkdir()
    write_ecosystem_files(tmp, model, record, name="medical-lbr")
    assert sorted(p.name for p in tmp.iterdir()) == ["README.md", "config_sentence_transformers.json", "modules.json"]
    assert all(p.is_file() for p in tmp.iterdir())
    card = (tmp / "README.md").read_text()
    assert "# medical-lbr" in card and "### Stage 2: Represent" in card
