"""The two stages as library calls: ``learn`` (stage 1) and ``represent`` (stage 2).

>>> from lbr.config import ModelConfig, Stage1Config, Stage2Config, TrainConfig
>>> from lbr.training import learn, represent
>>> learn(ModelConfig(), Stage1Config(corpus="corpus.jsonl"), TrainConfig(output="runs/s1"))
>>> model = represent(ModelConfig(model="runs/s1"), Stage2Config(pairs="pairs.jsonl"),
...                   TrainConfig(output="runs/s2"))
>>> model.encode_query(["short stature"])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from lbr.config import ModelConfig, Stage1Config, Stage2Config, TrainConfig
from lbr.data.corpus import SegmentCollator, read_corpus, segment_documents
from lbr.data.pairs import PairCollator, read_pairs
from lbr.errors import ConfigError
from lbr.losses import CachedStage2Loss, Stage1Loss, Stage2Loss
from lbr.modeling.lbr_model import LBR_CONFIG_NAME, LBRModel
from lbr.training.trainer import Trainer, prepare_output_dir

# ModelConfig fields fixed by a saved model: they cannot change between stages.
ARCHITECTURE_FIELDS = (
    "num_bottleneck_tokens",
    "projector",
    "rate_beta",
    "tuning",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
)


def is_lbr_dir(spec: str) -> bool:
    return (Path(spec) / LBR_CONFIG_NAME).exists()


def build_or_load(model_config: ModelConfig, *, seed: int, explicit: set[str] | None = None) -> LBRModel:
    """A trainable model: loaded from an lbr directory (continuing), or built from a base LLM.

    Args:
        explicit: ModelConfig fields the user set; for an lbr directory, an architecture field
            set to a different value than the saved one is an error rather than ignored.
    """
    if not is_lbr_dir(model_config.model):
        return LBRModel.build(model_config, seed=seed)
    model = LBRModel.load(model_config.model, trainable=True, trust_remote_code=model_config.trust_remote_code)
    conflicts = [
        f"{name}: saved {getattr(model.config, name)!r}, asked {getattr(model_config, name)!r}"
        for name in ARCHITECTURE_FIELDS
        if name in (explicit or set()) and getattr(model.config, name) != getattr(model_config, name)
    ]
    if conflicts:
        raise ConfigError(
            f"{model_config.model}: settings fixed by the saved model differ:\n  " + "\n  ".join(conflicts)
        )
    # Settings that may legitimately change between stages.
    model.config = dataclasses.replace(model.config, decoder=model_config.decoder, max_length=model_config.max_length)
    return model


CALIBRATION_TEXTS = 64


def calibrate_if_fresh(model: LBRModel, model_config: ModelConfig, token_lists: list[list[int]]) -> None:
    """Calibrate a new 'calibrated' projector on the first texts (a saved one keeps its weights).

    On resume the checkpoint then overwrites the projector, so the result is the same.
    """
    if model.config.projector == "calibrated" and not is_lbr_dir(model_config.model):
        model.calibrate_projector(token_lists[:CALIBRATION_TEXTS])


def _stage_record(stage: str, settings: Any, train: TrainConfig, **data: Any) -> dict[str, Any]:
    """What lbr_config.json records of a stage; the trainer adds the final losses."""
    return {"stage": stage, **dataclasses.asdict(settings), "train": dataclasses.asdict(train), **data}


def learn(
    model_config: ModelConfig,
    stage1: Stage1Config,
    train: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force_resume: bool = False,
    explicit: set[str] | None = None,
    show_progress: bool = True,
) -> LBRModel:
    """Stage 1: train ``L_know + lambda * L_IB`` on an unlabeled corpus and save the model."""
    if not stage1.corpus:
        raise ConfigError("stage 1 needs a corpus (--corpus)")
    if not train.output:
        raise ConfigError("set an output directory (--output)")
    documents = read_corpus(
        stage1.corpus,
        text_field=stage1.text_field,
        next_field=stage1.next_field,
        max_line_bytes=stage1.max_line_bytes,
    )
    prepare_output_dir(Path(train.output), resume=resume, overwrite=overwrite)
    model = build_or_load(model_config, seed=train.seed, explicit=explicit)
    segments = segment_documents(
        documents,
        model.tokenizer,
        stage1.segment_length,
        split_single=stage1.target in ("continue", "both"),
    )
    calibrate_if_fresh(model, model_config, [segment.tokens for segment in segments])
    return _train_and_save(
        model,
        Stage1Loss(model, stage1, token_budget=train.token_budget),
        segments,
        SegmentCollator(model, stage1.max_target_length, stage1.decoder_targets()),
        train,
        stage="stage1",
        settings=dataclasses.asdict(stage1),
        model_config=model_config,
        record=_stage_record("stage1", stage1, train, documents=len(documents), segments=len(segments)),
        resume=resume,
        force_resume=force_resume,
        show_progress=show_progress,
    )


def represent(
    model_config: ModelConfig,
    stage2: Stage2Config,
    train: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    force_resume: bool = False,
    explicit: set[str] | None = None,
    show_progress: bool = True,
) -> LBRModel:
    """Stage 2: train ``InfoNCE + mu * L_gen`` on pairs, from a stage-1 directory or a bare LLM."""
    if not stage2.pairs:
        raise ConfigError("stage 2 needs pairs (--pairs)")
    if not train.output:
        raise ConfigError("set an output directory (--output)")
    pairs = read_pairs(stage2.pairs, max_line_bytes=stage2.max_line_bytes)
    prepare_output_dir(Path(train.output), resume=resume, overwrite=overwrite)
    model = build_or_load(model_config, seed=train.seed, explicit=explicit)
    model.query_instruction = stage2.query_instruction
    if model.config.projector == "calibrated":
        documents = [pair.positive for pair in pairs[:CALIBRATION_TEXTS]]
        max_length = stage2.max_document_length
        tokens = model.tokenizer(documents, add_special_tokens=False, truncation=True, max_length=max_length)
        calibrate_if_fresh(model, model_config, tokens["input_ids"])
    collate = PairCollator(
        model,
        pairs,
        num_negatives=stage2.num_negatives,
        query_instruction=stage2.query_instruction,
        max_query_length=stage2.max_query_length,
        max_document_length=stage2.max_document_length,
    )
    if stage2.cache_mini_batch > 0:
        objective: nn.Module = CachedStage2Loss(
            model, stage2, mini_batch_size=stage2.cache_mini_batch, token_budget=train.token_budget
        )
    else:
        objective = Stage2Loss(model, stage2, token_budget=train.token_budget)
    return _train_and_save(
        model,
        objective,
        pairs,
        collate,
        train,
        stage="stage2",
        settings=dataclasses.asdict(stage2),
        model_config=model_config,
        record=_stage_record("stage2", stage2, train, pairs_count=len(pairs)),
        resume=resume,
        force_resume=force_resume,
        show_progress=show_progress,
    )


def _train_and_save(
    model: LBRModel,
    objective: nn.Module,
    examples: list[Any],
    collate: Any,
    train: TrainConfig,
    *,
    stage: str,
    settings: dict[str, Any],
    model_config: ModelConfig,
    record: dict[str, Any],
    resume: bool,
    force_resume: bool,
    show_progress: bool,
) -> LBRModel:
    """Train one stage, then save the model with this stage appended to its history."""
    trainer = Trainer(
        model,
        objective,
        examples,
        collate,
        train,
        run_config={
            "stage": stage,
            "model": dataclasses.asdict(model_config),
            stage: settings,
            "train": dataclasses.asdict(train),
        },
        stage=stage,
        show_progress=show_progress,
    )
    record["final"] = trainer.train(resume=resume, force=force_resume)
    stages = [*model.metadata.get("stages", []), record]
    trainer.save_model({"stages": stages})
    trainer.finish()
    return model
