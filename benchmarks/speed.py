"""Speed and memory of lbr against the obvious alternatives, measured side by side in one run.

    .venv/bin/python benchmarks/speed.py                 # the full run (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/speed.py --quick         # tiny sizes, to check the script works

What is compared (every pair on the same model, the same LoRA adapter, the same data):

1. stage-1 step (L_know + L_IB: two passes) vs a plain HF causal-LM step (``labels=input_ids``);
2. stage-2 step (InfoNCE, mu = 0) vs a sentence-transformers ``MultipleNegativesRankingLoss`` step
   on an ST model built around the same HF weights (last-token pooling, same LoRA, same scale);
3. ``LBRModel.encode`` vs ``SentenceTransformer.encode`` (last-token pooling) on real documents;
4. peak resident memory of one training step of each stage, each in its own subprocess;
5. exact (numpy) vs FAISS top-k search from 1k to 100k documents (random unit vectors).

The machine is noisy (2 shared cores), so the compared variants are interleaved: each repetition
runs every variant once, in a rotated order, and the report gives medians and the median of the
per-repetition ratios. A training step is forward + backward + AdamW step; tokenisation of the
training batch is done once, outside the timed region, for both sides (a data loader's job).
Results go to stdout (markdown) and to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# ---------------------------------------------------------------------------------------- sizes


@dataclasses.dataclass
class Sizes:
    """Everything that sets how long the run takes."""

    stage1_batch: int = 16  # texts per stage-1 step
    segment_length: int = 64  # tokens per stage-1 text (the demo's setting)
    stage2_batch: int = 16  # (query, positive, hard negative) triples per stage-2 step
    max_document_length: int = 128
    cache_mini_batch: int = 8
    encode_docs: int = 160
    encode_batch: int = 32
    encode_max_length: int = 256
    train_reps: int = 4
    encode_reps: int = 3
    search_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    search_queries: int = 200
    search_reps: int = 3
    top_k: int = 100
    memory_big_batch: int = 64  # stage-2 batch for the bounded-memory probe of the cached loss


QUICK = Sizes(
    stage1_batch=2,
    segment_length=16,
    stage2_batch=2,
    max_document_length=16,
    cache_mini_batch=1,
    encode_docs=8,
    encode_batch=4,
    encode_max_length=32,
    train_reps=1,
    encode_reps=1,
    search_sizes=(1_000, 5_000),
    search_queries=10,
    search_reps=1,
    top_k=10,
    memory_big_batch=4,
)

# ---------------------------------------------------------------------------------------- timing


def timed_interleaved(
    variants: dict[str, Callable[[], Any]], reps: int, *, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Seconds per call of each variant; each repetition runs all variants in a rotated order.

    Untimed warm-up calls first (oneDNN kernel selection, allocator growth): the first variant,
    and every bf16 variant (its AMX kernels are created on first use). The other variants share
    the first one's kernels; a full warm-up of each would not fit the 15-minute budget.
    """
    names = list(variants)
    for name in names:
        if name == names[0] or "bf16" in name:
            started = time.perf_counter()
            variants[name]()
            log(f"  warm-up {name}: {time.perf_counter() - started:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            started = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - started)
            log(f"  rep {rep + 1}/{reps} {name}: {times[name][-1]:.2f} s")
    return times


def summarise(times: dict[str, list[float]], anchor: str, work: float, unit: str) -> list[dict[str, Any]]:
    """Median seconds, throughput and ratios to ``anchor`` (of medians, and median of paired ratios)."""
    rows = []
    base = statistics.median(times[anchor])
    for name, values in times.items():
        median = statistics.median(values)
        paired = [value / ref for value, ref in zip(values, times[anchor], strict=True)]
        rows.append(
            {
                "variant": name,
                "median_s": median,
                "min_s": min(values),
                "max_s": max(values),
                "reps": len(values),
                f"{unit}_per_s": work / median,
                "time_ratio_to_anchor": median / base,
                "paired_time_ratio_median": statistics.median(paired),
                "anchor": anchor,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MB."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size (VmHWM) since the process started or since :func:`reset_peak_rss`."""
    return _status_kb("VmHWM") / 1024


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------- data


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def stage1_segments(tokenizer: Any, sizes: Sizes, seed: int = 0) -> list[Any]:
    """A seeded sample of stage-1 segments of data/medical/knowledge.open.jsonl (as the trainer sees them)."""
    from lbr.data.corpus import read_corpus, segment_documents

    documents = read_corpus(DATA / "medical" / "knowledge.open.jsonl")[:4000]
    segments = segment_documents(documents, tokenizer, sizes.segment_length, split_single=False)
    return random.Random(seed).sample(segments, sizes.stage1_batch)


def stage2_pairs(sizes: Sizes, count: int | None = None) -> list[Any]:
    """The first pairs of data/medical/pairs.train.jsonl that carry a hard negative."""
    from lbr.data.pairs import read_pairs

    pairs = [pair for pair in read_pairs(DATA / "medical" / "pairs.train.jsonl") if pair.negatives]
    return pairs[: count or sizes.stage2_batch]


def encode_documents(sizes: Sizes) -> list[str]:
    """The first documents of data/code/corpus.jsonl, as lbr formats them ("title: text")."""
    from lbr.data.beir import format_document

    rows = read_jsonl(DATA / "code" / "corpus.jsonl", sizes.encode_docs)
    return [format_document(row.get("title", ""), row["text"]) for row in rows]


# ---------------------------------------------------------------------------------------- models


def build_lbr() -> Any:
    from lbr.config import ModelConfig
    from lbr.modeling import LBRModel

    model = LBRModel.build(ModelConfig(), seed=0)
    model.train()
    return model


def build_st(max_seq_length: int) -> Any:
    """A SentenceTransformer over the same HF weights: LlamaModel -> last-token pooling, same LoRA.

    The input is plain text: ST 6 would otherwise render each text through SmolLM2's chat
    template (a 20-token system prompt per text), which is not what lbr feeds the model.
    """
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    from lbr.config import ModelConfig
    from lbr.modeling.loading import resolve_model_path

    config = ModelConfig()
    transformer = Transformer(
        resolve_model_path(config.model),
        max_seq_length=max_seq_length,
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="FEATURE_EXTRACTION",
    )
    transformer.model = get_peft_model(transformer.model, lora)
    pooling = Pooling(transformer.get_embedding_dimension(), "lasttoken")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    model.train()
    return model


def set_checkpointing(hf_model: Any, enabled: bool) -> None:
    """Toggle HF gradient checkpointing (non-reentrant, as the lbr trainer sets it)."""
    if enabled:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf_model.gradient_checkpointing_disable()


def count_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@contextlib.contextmanager
def maybe_bf16(enabled: bool) -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
        yield


# ---------------------------------------------------------------------------------------- steps


def make_steps(lbr: Any, st: Any | None, sizes: Sizes, *, stage2_batch: int | None = None) -> dict[str, Callable]:
    """Closures that each run one training step (forward + backward + AdamW) of one variant."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from lbr.config import Stage1Config, Stage2Config, TrainConfig
    from lbr.data.corpus import SegmentCollator
    from lbr.data.pairs import PairCollator
    from lbr.losses import CachedStage2Loss, Stage1Loss, Stage2Loss

    budget = TrainConfig().token_budget
    lbr_params = [p for p in lbr.parameters() if p.requires_grad]
    lbr_opt = torch.optim.AdamW(lbr_params, lr=1e-6)  # a tiny lr: the weights barely move between variants

    # Stage 1: the same token lists for both sides.
    segments = stage1_segments(lbr.tokenizer, sizes)
    stage1_batch = SegmentCollator(lbr, sizes.segment_length)(segments)
    stage1_batch.pop("num_tokens")
    stage1_loss = Stage1Loss(lbr, Stage1Config(), token_budget=budget)
    width = max(len(s.tokens) for s in segments)
    plain_ids = torch.full((len(segments), width), lbr.tokenizer.pad_token_id)
    plain_mask = torch.zeros_like(plain_ids)
    for row, segment in enumerate(segments):
        plain_ids[row, : len(segment.tokens)] = torch.tensor(segment.tokens)
        plain_mask[row, : len(segment.tokens)] = 1
    plain_labels = plain_ids.masked_fill(plain_mask == 0, -100)

    def lbr_step(loss_fn: Callable[[], torch.Tensor], gc_on: bool, bf16: bool = False) -> Callable[[], None]:
        def step() -> None:
            set_checkpointing(lbr.causal_lm, gc_on)
            with maybe_bf16(bf16):
                loss = loss_fn()
            loss.backward()
            lbr_opt.step()
            lbr_opt.zero_grad(set_to_none=True)

        return step

    def hf_clm() -> torch.Tensor:
        return lbr.backbone(input_ids=plain_ids, attention_mask=plain_mask, labels=plain_labels, use_cache=False).loss

    # Stage 2: the same triples for both sides.
    pairs = stage2_pairs(sizes, stage2_batch)
    mu0 = Stage2Config(gen_weight=0.0, num_negatives=1, max_document_length=sizes.max_document_length)
    collate = PairCollator(
        lbr, pairs, num_negatives=1, query_instruction="", max_query_length=64,
        max_document_length=sizes.max_document_length,
    )  # fmt: skip
    stage2_batch_tensors = collate(pairs, torch.Generator().manual_seed(0))
    stage2_batch_tensors.pop("num_tokens")
    stage2_loss = Stage2Loss(lbr, mu0, token_budget=budget)
    cached_loss = CachedStage2Loss(lbr, mu0, mini_batch_size=sizes.cache_mini_batch, token_budget=budget)

    steps = {
        "hf_clm": lambda gc_on, bf16=False: lbr_step(hf_clm, gc_on, bf16),
        "lbr_stage1": lambda gc_on, bf16=False: lbr_step(lambda: stage1_loss(stage1_batch)["loss"], gc_on, bf16),
        "lbr_stage2": lambda gc_on, bf16=False: lbr_step(
            lambda: stage2_loss(stage2_batch_tensors)["loss"], gc_on, bf16
        ),
        "lbr_stage2_cached": lambda gc_on, bf16=False: lbr_step(
            lambda: cached_loss(stage2_batch_tensors)["loss"], gc_on, bf16
        ),
    }
    info = {
        "stage1_texts": len(segments),
        "stage1_text_tokens": int(sum(len(s.tokens) for s in segments)),
        "stage2_pairs": len(pairs),
        "stage2_text_tokens": int(
            sum(len(ids) for ids in lbr.tokenizer([p.query for p in pairs])["input_ids"])
            + int(
                collate.model.tokenize(
                    [p.positive for p in pairs] + [p.negatives[0] for p in pairs], sizes.max_document_length
                )["text_mask"].sum()
            )
        ),
        "lbr_trainable_params": count_trainable(lbr),
    }

    if st is not None:
        st_params = [p for p in st.parameters() if p.requires_grad]
        st_opt = torch.optim.AdamW(st_params, lr=1e-6)
        mnrl = MultipleNegativesRankingLoss(st, scale=1.0 / mu0.temperature)
        columns = [[p.query for p in pairs], [p.positive for p in pairs], [p.negatives[0] for p in pairs]]
        st_features = [st.preprocess(column) for column in columns]
        st_hf = st[0].model

        def st_step(gc_on: bool, bf16: bool = False) -> Callable[[], None]:
            def step() -> None:
                set_checkpointing(st_hf, gc_on)
                features = [dict(f) for f in st_features]  # ST modules write into the dict
                with maybe_bf16(bf16):
                    loss = mnrl(features, labels=None)
                loss.backward()
                st_opt.step()
                st_opt.zero_grad(set_to_none=True)

            return step

        steps["st_mnrl"] = st_step
        info["st_trainable_params"] = count_trainable(st)
    return {"steps": steps, "info": info}


# ---------------------------------------------------------------------------------------- sections


def section_training(
    lbr: Any, st: Any, sizes: Sizes, bf16: bool, sections: set[str], log: Callable[[str], None]
) -> dict[str, Any]:
    built = make_steps(lbr, st, sizes)
    steps, info = built["steps"], built["info"]
    out: dict[str, Any] = {"info": info}
    if "cached" in sections:
        log("== stage 2: cached (GradCache) loss vs the plain loss")
        variants = {
            "lbr_stage2[no-gc]": steps["lbr_stage2"](False),
            "lbr_stage2_cached[no-gc]": steps["lbr_stage2_cached"](False),
            "lbr_stage2[gc]": steps["lbr_stage2"](True),
            "lbr_stage2_cached[gc]": steps["lbr_stage2_cached"](True),
        }
        times = timed_interleaved(variants, sizes.train_reps, log=log)
        out["cached"] = {
            "times": times,
            "vs_plain": summarise(times, "lbr_stage2[no-gc]", info["stage2_text_tokens"], "tokens"),
        }
    if "stage1" in sections:
        out.update(_stage1(steps, info, sizes, bf16, log))
    if "stage2" in sections:
        out.update(_stage2(steps, info, sizes, bf16, log))
    set_checkpointing(lbr.causal_lm, False)
    if st is not None:
        set_checkpointing(st[0].model, False)
    return out


def _stage1(steps: dict[str, Callable], info: dict[str, Any], sizes: Sizes, bf16: bool, log: Callable) -> dict:
    out = {}
    log("== stage 1 vs plain HF causal-LM step")
    variants = {
        "hf_clm[gc]": steps["hf_clm"](True),
        "lbr_stage1[gc]": steps["lbr_stage1"](True),
        "hf_clm[no-gc]": steps["hf_clm"](False),
        "lbr_stage1[no-gc]": steps["lbr_stage1"](False),
    }
    if bf16:
        variants["lbr_stage1[no-gc,bf16]"] = steps["lbr_stage1"](False, True)
    times = timed_interleaved(variants, sizes.train_reps, log=log)
    out["stage1"] = {
        "times": times,
        "vs_hf_gc": summarise({k: times[k] for k in ("hf_clm[gc]", "lbr_stage1[gc]")}, "hf_clm[gc]",
                              info["stage1_text_tokens"], "tokens"),
        "vs_hf_no_gc": summarise({k: v for k, v in times.items() if "no-gc" in k}, "hf_clm[no-gc]",
                                 info["stage1_text_tokens"], "tokens"),
        "gc_cost": summarise({k: times[k] for k in ("lbr_stage1[no-gc]", "lbr_stage1[gc]")}, "lbr_stage1[no-gc]",
                             info["stage1_text_tokens"], "tokens"),
    }  # fmt: skip
    return out


def _stage2(steps: dict[str, Callable], info: dict[str, Any], sizes: Sizes, bf16: bool, log: Callable) -> dict:
    out = {}
    log("== stage 2 vs sentence-transformers MultipleNegativesRankingLoss step")
    variants = {
        "st_mnrl[gc]": steps["st_mnrl"](True),
        "lbr_stage2[gc]": steps["lbr_stage2"](True),
        "st_mnrl[no-gc]": steps["st_mnrl"](False),
        "lbr_stage2[no-gc]": steps["lbr_stage2"](False),
        "lbr_stage2_cached[no-gc]": steps["lbr_stage2_cached"](False),
    }
    if bf16:
        variants["lbr_stage2[no-gc,bf16]"] = steps["lbr_stage2"](False, True)
    times = timed_interleaved(variants, sizes.train_reps, log=log)
    out["stage2"] = {
        "times": times,
        "vs_st_gc": summarise({k: times[k] for k in ("st_mnrl[gc]", "lbr_stage2[gc]")}, "st_mnrl[gc]",
                              info["stage2_text_tokens"], "tokens"),
        "vs_st_no_gc": summarise({k: v for k, v in times.items() if "no-gc" in k}, "st_mnrl[no-gc]",
                                 info["stage2_text_tokens"], "tokens"),
        "gc_cost": summarise({k: times[k] for k in ("lbr_stage2[no-gc]", "lbr_stage2[gc]")}, "lbr_stage2[no-gc]",
                             info["stage2_text_tokens"], "tokens"),
    }  # fmt: skip
    return out


def section_encode(lbr: Any, st: Any, sizes: Sizes, bf16: bool, log: Callable[[str], None]) -> dict[str, Any]:
    log("== encode: LBRModel.encode vs SentenceTransformer.encode (last-token pooling)")
    docs = encode_documents(sizes)
    lbr.eval()
    st.eval()
    lbr.config = dataclasses.replace(lbr.config, max_length=sizes.encode_max_length)
    st.max_seq_length = sizes.encode_max_length
    merged = copy.deepcopy(lbr)
    merged.backbone = merged.backbone.merge_and_unload()
    common = {"batch_size": sizes.encode_batch, "show_progress_bar": False}
    outputs: dict[str, np.ndarray] = {}

    def run(name: str, fn: Callable[[], np.ndarray]) -> Callable[[], None]:
        def call() -> None:
            outputs[name] = fn()

        return call

    variants = {
        "st_encode": run("st_encode", lambda: st.encode(docs, **common)),
        "lbr_encode": run("lbr_encode", lambda: lbr.encode(docs, **common)),
        "lbr_encode[merged-lora]": run("lbr_encode[merged-lora]", lambda: merged.encode(docs, **common)),
    }
    if bf16:

        def lbr_bf16() -> np.ndarray:
            with maybe_bf16(True):
                return lbr.encode(docs, **common)

        variants["lbr_encode[bf16]"] = run("lbr_encode[bf16]", lbr_bf16)
    times = timed_interleaved(variants, sizes.encode_reps, log=log)
    encoded = lbr.tokenizer(docs, truncation=True, max_length=sizes.encode_max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    agreement = {}
    reference = outputs["lbr_encode"]
    for name, emb in outputs.items():
        if name.startswith("lbr_") and name != "lbr_encode":
            cos = np.sum(reference * emb, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(emb, axis=1))
            agreement[name] = {"min_cosine_to_fp32": float(cos.min()), "mean_cosine_to_fp32": float(cos.mean())}
    return {
        "docs": len(docs),
        "tokens": {"total": int(sum(lengths)), "min": min(lengths), "median": statistics.median(lengths),
                   "max": max(lengths)},
        "times": times,
        "vs_st": summarise(times, "st_encode", len(docs), "texts"),
        "agreement": agreement,
    }  # fmt: skip


def section_search(sizes: Sizes, hidden: int, texts_per_s: float | None, log: Callable[[str], None]) -> dict[str, Any]:
    import faiss

    from lbr.evaluation.retrieval import dense_search

    log(f"== search: exact numpy vs FAISS IndexFlatIP, random unit vectors (d={hidden})")
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((sizes.search_queries, hidden), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_ids = [f"q{i}" for i in range(len(queries))]
    rows = []
    for size in sizes.search_sizes:
        docs = rng.standard_normal((size, hidden), dtype=np.float32)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        doc_ids = [f"d{i}" for i in range(size)]
        runs: dict[str, Any] = {}

        def search(backend: str, docs: np.ndarray, doc_ids: list[str], runs: dict[str, Any]) -> Callable[[], None]:
            def call() -> None:
                runs[backend] = dense_search(queries, docs, query_ids, doc_ids, sizes.top_k, backend=backend)

            return call

        variants = {backend: search(backend, docs, doc_ids, runs) for backend in ("exact", "faiss")}
        times = timed_interleaved(variants, sizes.search_reps, log=log)
        same = sum(len(set(runs["exact"][q]) & set(runs["faiss"][q])) for q in query_ids) / (
            len(query_ids) * sizes.top_k
        )
        # An approximate index for contrast: IVF with sqrt(N)-ish lists, 8 probes.
        nlist = max(1, int(4 * np.sqrt(size)))
        started = time.perf_counter()
        quantizer = faiss.IndexFlatIP(hidden)
        ivf = faiss.IndexIVFFlat(quantizer, hidden, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(docs[: min(size, 50 * nlist)])
        ivf.add(docs)
        build = time.perf_counter() - started
        ivf.nprobe = 8
        started = time.perf_counter()
        _, found = ivf.search(queries, 10)
        ivf_search = time.perf_counter() - started
        exact_top10 = [list(runs["exact"][q])[:10] for q in query_ids]
        recall = np.mean(
            [len({f"d{j}" for j in found[i] if j >= 0} & set(exact_top10[i])) / 10 for i in range(len(query_ids))]
        )
        rows.append(
            {
                "docs": size,
                "queries": len(queries),
                "top_k": sizes.top_k,
                "exact_median_s": statistics.median(times["exact"]),
                "faiss_flat_median_s": statistics.median(times["faiss"]),
                "faiss_over_exact": statistics.median(times["faiss"]) / statistics.median(times["exact"]),
                "topk_overlap_exact_vs_faiss": same,
                "ivf_nlist": nlist,
                "ivf_build_s": build,
                "ivf_search_s": ivf_search,
                "ivf_recall_at_10_nprobe8": float(recall),
                "embeddings_mb": docs.nbytes / 2**20,
                "encode_s_extrapolated": size / texts_per_s if texts_per_s else None,
            }
        )
    return {"rows": rows}


# ---------------------------------------------------------------------------------------- memory


MEMORY_PROBES = (
    "hf_clm[gc]",
    "st_mnrl[gc]",
    "st_mnrl[no-gc]",
    "lbr_stage1[gc]",
    "lbr_stage1[no-gc]",
    "lbr_stage2[gc]",
    "lbr_stage2[no-gc]",
    "lbr_stage2_cached[no-gc]",
    "lbr_stage2[gc,big]",
    "lbr_stage2_cached[no-gc,big]",
    "lbr_stage2_cached[gc,big]",
    "lbr_encode",
)


def run_probe(name: str, sizes: Sizes) -> dict[str, Any]:
    """In a fresh process: build the models, then measure the peak RSS of one step of ``name``."""
    lbr = build_lbr()
    need_st = name.startswith("st_")
    st = build_st(sizes.max_document_length) if need_st else None
    big = name.endswith(",big]")
    stage2_batch = sizes.memory_big_batch if big else None
    loaded = rss_mb()
    load_peak = peak_rss_mb()
    gc_on = "[gc" in name
    reset_ok = reset_peak_rss()
    started = time.perf_counter()
    if name == "lbr_encode":
        lbr.eval()
        lbr.config = dataclasses.replace(lbr.config, max_length=sizes.encode_max_length)
        lbr.encode(encode_documents(sizes), batch_size=sizes.encode_batch, show_progress_bar=False)
        batch_note = f"{sizes.encode_docs} code docs, batch {sizes.encode_batch}"
    else:
        steps = make_steps(lbr, st, sizes, stage2_batch=stage2_batch)["steps"]
        kind = name.split("[")[0]
        steps[kind](gc_on)()
        batch_note = f"stage-2 batch {stage2_batch}" if big else ""
    seconds = time.perf_counter() - started
    return {
        "probe": name,
        "rss_after_load_mb": loaded,
        "step_peak_mb": peak_rss_mb() if reset_ok else None,
        # VmHWM of this process before the reset: loading is not the peak.
        # (ru_maxrss is not used: after fork+exec it starts from the parent's peak.)
        "load_peak_mb": load_peak,
        "step_s": seconds,
        "note": batch_note,
    }


def section_memory(
    sizes: Sizes, quick: bool, probes: tuple[str, ...], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    log("== memory: one step per probe, each in a fresh subprocess")
    rows = []
    for name in probes:
        command = [sys.executable, str(Path(__file__).resolve()), "--probe", name] + (["--quick"] if quick else [])
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            log(f"  {name}: probe failed\n{result.stderr[-2000:]}")
            rows.append({"probe": name, "error": result.stderr[-500:]})
            continue
        row = json.loads(lines[-1])
        rows.append(row)
        log(f"  {name}: {json.dumps(row)}")
    return rows


# ---------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "date": subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip(),
        "lscpu_head": lscpu[:10],
        "cpu_model": next((line.split(":", 1)[1].strip() for line in lscpu if line.startswith("Model name")), ""),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# speed.py results ({results['machine']['date']})", ""]

    def table(rows: list[dict[str, Any]], unit: str) -> None:
        lines.append(f"| variant | median s | min s | {unit}/s | time / anchor (medians) | paired ratio (median) |")
        lines.append("|---|---|---|---|---|---|")
        for row in rows:
            lines.append(
                f"| {row['variant']} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row[f'{unit}_per_s']:.1f} | "
                f"{row['time_ratio_to_anchor']:.3f} | {row['paired_time_ratio_median']:.3f} |"
            )
        lines.append("")

    if "training" in results:
        training = results["training"]
        lines.append(f"Training batches: {json.dumps(training['info'])}\n")
        for stage, keys in (("stage1", ("vs_hf_gc", "vs_hf_no_gc", "gc_cost")),
                            ("stage2", ("vs_st_gc", "vs_st_no_gc", "gc_cost")),
                            ("cached", ("vs_plain",))):  # fmt: skip
            for key in keys:
                if stage not in training:
                    continue
                lines.append(f"## {stage}: {key}\n")
                table(training[stage][key], "tokens")
    if "encode" in results:
        encode = results["encode"]
        lines.append(f"## encode ({encode['docs']} docs, tokens {json.dumps(encode['tokens'])})\n")
        table(encode["vs_st"], "texts")
        lines.append(f"Agreement with fp32 lbr: {json.dumps(encode['agreement'])}\n")
    if "memory" in results:
        lines.append("## memory (MB; step peak = VmHWM after a reset right after loading)\n")
        lines.append("| probe | RSS after load | peak while loading | step peak | step peak - load | step s | note |")
        lines.append("|---|---|---|---|---|---|---|")
        for row in results["memory"]:
            if "error" in row:
                lines.append(f"| {row['probe']} | failed | | | | | |")
                continue
            peak = row["step_peak_mb"]
            extra = f"{peak - row['rss_after_load_mb']:.0f}" if peak is not None else "n/a"
            peak_text = f"{peak:.0f}" if peak is not None else "n/a"
            lines.append(
                f"| {row['probe']} | {row['rss_after_load_mb']:.0f} | {row['load_peak_mb']:.0f} | {peak_text} | "
                f"{extra} | {row['step_s']:.1f} | {row['note']} |"
            )
        lines.append("")
    if "search" in results:
        lines.append("## search (random unit vectors)\n")
        lines.append(
            "| docs | exact s | FAISS flat s | FAISS/exact | top-k overlap | IVF build s | IVF search s | "
            "IVF recall@10 | embeddings MB | encode s (extrapolated) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for row in results["search"]["rows"]:
            encode_s = row["encode_s_extrapolated"]
            lines.append(
                f"| {row['docs']} | {row['exact_median_s']:.3f} | {row['faiss_flat_median_s']:.3f} | "
                f"{row['faiss_over_exact']:.2f} | {row['topk_overlap_exact_vs_faiss']:.3f} | "
                f"{row['ivf_build_s']:.2f} | "
                f"{row['ivf_search_s']:.4f} | {row['ivf_recall_at_10_nprobe8']:.3f} | {row['embeddings_mb']:.0f} | "
                f"{'' if encode_s is None else f'{encode_s:.0f}'} |"
            )
        lines.append("")
    lines.append(f"Total wall time: {results['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument(
        "--sections",
        default="stage1,stage2,encode,search,memory",
        help="comma-separated: stage1, stage2, cached (cached vs plain stage-2 loss), encode, search, memory",
    )
    parser.add_argument("--probes", default=",".join(MEMORY_PROBES), help="memory probes to run (comma-separated)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variants")
    parser.add_argument(
        "--encode-docs", type=int, default=None, help="documents the encode section embeds (default: 160, --quick: 8)"
    )
    parser.add_argument("--json", default="", help="write all results here (default: benchmarks/results/)")
    parser.add_argument("--probe", default="", help=argparse.SUPPRESS)  # internal: one memory probe
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.encode_docs is not None:
        if args.encode_docs < 1:
            parser.error("--encode-docs must be >= 1")
        sizes = dataclasses.replace(sizes, encode_docs=args.encode_docs)
    if args.probe:
        print(json.dumps(run_probe(args.probe, sizes)))
        return 0

    # Probe names hold commas inside brackets ("lbr_stage2[gc,big]"): split outside them only.
    probes = tuple(name.strip() for name in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", args.probes) if name.strip())
    unknown = sorted(set(probes) - set(MEMORY_PROBES))
    if unknown:
        parser.error(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(MEMORY_PROBES)}")
    torch.manual_seed(0)
    started = time.perf_counter()
    sections = set(args.sections.split(","))
    bf16 = not args.no_bf16

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    results: dict[str, Any] = {"machine": machine(), "sizes": dataclasses.asdict(sizes), "command": sys.argv}
    log(f"machine: {results['machine']['cpu_model']}, {results['machine']['cores']} cores")
    lbr = st = None
    if sections & {"stage1", "stage2", "cached", "encode"}:
        lbr = build_lbr()
        st = build_st(sizes.max_document_length) if sections & {"stage2", "encode"} else None
        log(f"models built; RSS {rss_mb():.0f} MB")
    if sections & {"stage1", "stage2", "cached"}:
        results["training"] = section_training(lbr, st, sizes, bf16, sections, log)
        results["training"]["main_process_peak_mb"] = peak_rss_mb()
    texts_per_s = None
    if "encode" in sections:
        results["encode"] = section_encode(lbr, st, sizes, bf16, log)
        texts_per_s = next(r["texts_per_s"] for r in results["encode"]["vs_st"] if r["variant"] == "lbr_encode")
    hidden = lbr.hidden_size if lbr is not None else 576
    del lbr, st
    gc.collect()
    if "search" in sections:
        results["search"] = section_search(sizes, hidden, texts_per_s, log)
    if "memory" in sections:
        results["memory"] = section_memory(sizes, args.quick, probes, log)
    results["wall_s"] = time.perf_counter() - started
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    default = ROOT / "benchmarks" / "results" / ("speed-quick.json" if args.quick else "speed.json")
    out = Path(args.json) if args.json else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
