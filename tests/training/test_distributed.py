"""Two processes (gloo, CPU) give the one-process loss and gradients, through accelerate launch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent


def _launch(args: list[str], processes: int, tmp_path: Path) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [
            accelerate,
            "launch",
            "--cpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            env["MASTER_PORT"],
            *args,
        ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_two_processes_match_one_process_at_step_one(stage, tiny_model_dir, tmp_path):
    script = str(HERE / "ddp_step.py")
    _launch([script, stage, str(tiny_model_dir), str(tmp_path / "one.safetensors")], 1, tmp_path)
    _launch([script, stage, str(tiny_model_dir), str(tmp_path / "two.safetensors")], 2, tmp_path)
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert one.keys() == two.keys() and len(one) > 10
    torch.testing.assert_close(two["loss"], one["loss"], atol=1e-5, rtol=1e-5)
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-4, msg=name)
    assert any(float(one[name].abs().sum()) > 0 for name in one if name.startswith("grad.")), "gradients are all zero"


def test_both_stages_run_under_accelerate_launch(tiny_model_dir, corpus_file, pairs_file, tmp_path):
    common = [
        "--num-bottleneck-tokens",
        "3",
        "--lora-r",
        "4",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--no-progress",
        "--save-steps",
        "1",
    ]
    _launch(
        [
            "-m",
            "lbr",
            "learn",
            "--model",
            str(tiny_model_dir),
            "--corpus",
            str(corpus_file),
            "--output",
            str(tmp_path / "s1"),
            *common,
        ],
        2,
        tmp_path,
    )
    _launch(
        [
            "-m",
            "lbr",
            "represent",
            "--model",
            str(tmp_path / "s1"),
            "--pairs",
            str(pairs_file),
            "--output",
            str(tmp_path / "s2"),
            *common,
        ],
        2,
        tmp_path,
    )
    saved = json.loads((tmp_path / "s2" / "lbr_config.json").read_text())
    assert [s["stage"] for s in saved["stages"]] == ["stage1", "stage2"]
    log = (tmp_path / "s2" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 2  # only the main process logs


def test_encoding_is_sharded_across_processes_in_input_order(tiny_model_dir, tmp_path):
    import numpy as np

    from lbr.config import ModelConfig
    from lbr.modeling import LBRModel

    model = LBRModel.build(ModelConfig(model=str(tiny_model_dir), num_bottleneck_tokens=2, lora_r=4), seed=1)
    model.save(tmp_path / "model")
    texts = [" ".join(["heart", "bone", "acid", "water"][: 1 + i % 4]) + f" {'skin ' * i}" for i in range(11)]
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n")
    args = [
        "-m",
        "lbr",
        "encode",
        "--model",
        str(tmp_path / "model"),
        "--input",
        str(tmp_path / "docs.txt"),
        "--no-progress",
        "--batch-size",
        "3",
    ]
    _launch([*args, "--output", str(tmp_path / "two.npy")], 2, tmp_path)
    expected = model.encode_document(texts)
    np.testing.assert_allclose(np.load(tmp_path / "two.npy"), expected, atol=1e-5)
    assert json.loads((tmp_path / "two.ids.json").read_text()) == [str(i) for i in range(1, 12)]
