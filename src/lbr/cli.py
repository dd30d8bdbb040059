"""The ``lbr`` command line. Thin: build config objects, call the library.

``main(argv) -> int`` can be called from tests. Every config field is a flag; ``--config FILE``
(YAML or JSON) supplies the same names, and flags given on the command line win.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lbr.config import ModelConfig, Stage1Config, Stage2Config, TrainConfig, config_fields, from_dict, load_config_file
from lbr.errors import ConfigError, LBRError

# Short, method-named aliases for the options people reach for most.
ALIASES = {"num_bottleneck_tokens": ["-k"], "ib_weight": ["--lambda"], "gen_weight": ["--mu"]}


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per dataclass field, defaulting to SUPPRESS so we can tell what was given."""
    group = parser.add_argument_group(title)
    for f in config_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *ALIASES.get(f.name, [])]
        default = f.default
        # argparse %-formats help strings: a literal "%" (e.g. "30% more time") must be doubled.
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        if f.type in (bool, "bool"):
            group.add_argument(
                *names, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), type(default))
            group.add_argument(
                *names, dest=f.name, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text
            )


def build_configs(args: argparse.Namespace, classes: list[type]) -> tuple[list[Any], set[str]]:
    """Instantiate each config class from defaults < --config file < flags.

    Returns the configs and the set of field names the user set explicitly.
    """
    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    given = {key: value for key, value in vars(args).items()}
    known = {f.name for cls in classes for f in config_fields(cls)}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"{args.config}: unknown option(s) for this command: {', '.join(unknown)}")
    configs = []
    for cls in classes:
        names = {f.name for f in config_fields(cls)}
        values = {k: v for k, v in file_values.items() if k in names}
        values.update({k: v for k, v in given.items() if k in names})
        configs.append(from_dict(cls, values, source=getattr(args, "config", None) or "flags"))
    explicit = set(file_values) | {k for k in given if k in known}
    return configs, explicit


def _common_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML/JSON file with any model, stage or training option below, but not --resume, --overwrite, "
        "--force-resume or --no-progress (flags win)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output directory")
    parser.add_argument(
        "--force-resume", action="store_true", help="resume even if the settings differ from the saved run"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _run_stage(args: argparse.Namespace, stage_config: type, number: int) -> int:
    from lbr import training

    run = training.learn if number == 1 else training.represent
    (model_config, settings, train), explicit = build_configs(args, [ModelConfig, stage_config, TrainConfig])
    started = time.perf_counter()
    run(
        model_config,
        settings,
        train,
        resume=args.resume,
        overwrite=args.overwrite,
        force_resume=args.force_resume,
        explicit=explicit,
        show_progress=not args.no_progress,
    )
    print(f"stage {number} done in {time.perf_counter() - started:.0f} s; model saved to {train.output}")
    return 0


def run_learn(args: argparse.Namespace) -> int:
    return _run_stage(args, Stage1Config, 1)


def run_represent(args: argparse.Namespace) -> int:
    return _run_stage(args, Stage2Config, 2)


def run_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from lbr.data.beir import read_texts
    from lbr.modeling import LBRModel

    output = Path(args.output)
    if output.suffix != ".npy":
        raise ConfigError(f"{output}: --output must end in .npy")
    ids_path = output.with_suffix(".ids.json")
    if not args.overwrite and (output.exists() or ids_path.exists()):
        raise ConfigError(f"{output}: already exists; pass --overwrite to replace it")
    records = read_texts(
        args.input,
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field if args.kind == "document" else "",  # a query is its text alone
        max_line_bytes=args.max_line_bytes,
    )
    ids = [text_id for text_id, _ in records]
    texts = [text for _, text in records]
    from accelerate import PartialState
    from accelerate.utils import gather_object

    model = LBRModel.load(args.model, trust_remote_code=args.trust_remote_code)
    encode = model.encode_query if args.kind == "query" else model.encode_document
    started = time.perf_counter()
    # Under `accelerate launch`, each process encodes one contiguous shard; shards are
    # gathered in rank order, so the rows stay in input order.
    state = PartialState()
    with state.split_between_processes(texts) as shard:
        local = encode(
            shard,
            batch_size=args.batch_size,
            show_progress_bar=not args.no_progress and state.is_main_process,
            precision="bfloat16" if args.bf16 else "float32",
        )
    shards = gather_object([local]) if state.num_processes > 1 else [local]
    if not state.is_main_process:
        return 0
    embeddings = np.concatenate([np.asarray(part).reshape(-1, model.hidden_size) for part in shards])
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.stem + ".tmp.npy")
    np.save(tmp, embeddings.astype(np.float32))
    tmp.replace(output)
    ids_path.write_text(json.dumps(ids), encoding="utf-8")
    print(
        f"encoded {len(texts)} texts in {time.perf_counter() - started:.1f} s -> {output} "
        f"{embeddings.shape}, ids in {ids_path}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbr",
        description="Learn Before Represent: turn a decoder-only LLM into a domain embedding model.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    learn = sub.add_parser(
        "learn",
        help="stage 1: learn the domain (L_know + lambda * L_IB)",
        description="Stage 1: continued training on an unlabeled corpus under an information bottleneck.",
    )
    _common_run_flags(learn)
    add_config_flags(learn, ModelConfig, "model")
    add_config_flags(learn, Stage1Config, "stage 1")
    add_config_flags(learn, TrainConfig, "training")
    learn.set_defaults(func=run_learn)

    represent = sub.add_parser(
        "represent",
        help="stage 2: contrastive learning (InfoNCE + mu * L_gen)",
        description="Stage 2: contrastive training on (query, positive, negatives) "
        "pairs, from a stage-1 directory or a bare LLM (LLM+CL).",
    )
    _common_run_flags(represent)
    add_config_flags(represent, ModelConfig, "model")
    add_config_flags(represent, Stage2Config, "stage 2")
    add_config_flags(represent, TrainConfig, "training")
    represent.set_defaults(func=run_represent)

    encode = sub.add_parser("encode", help="embed a file of texts with a trained model")
    encode.add_argument("--model", required=True, help="an lbr model directory")
    encode.add_argument("--input", required=True, help=".jsonl (id and text fields) or .txt (one text per line)")
    encode.add_argument("--output", required=True, help="embeddings .npy; ids go to the same name with .ids.json")
    encode.add_argument(
        "--kind",
        choices=("document", "query"),
        default="document",
        help="encode as documents, or as queries with the model's instruction",
    )
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--id-field", default="_id", help="jsonl id field (default: _id; line number if absent)")
    encode.add_argument("--text-field", default="text")
    encode.add_argument(
        "--title-field",
        default="title",
        help="optional jsonl title field of documents, encoded as 'title: text' like the documents in training "
        "and evaluation (default: title; '' ignores titles; queries are always their text alone)",
    )
    encode.add_argument("--max-line-bytes", type=int, default=1_000_000)
    encode.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast: 1.7-1.9x faster on CPUs with AVX512-BF16 or AMX, much slower on others",
    )
    encode.add_argument("--overwrite", action="store_true")
    encode.add_argument("--trust-remote-code", action="store_true")
    encode.add_argument("--no-progress", action="store_true")
    encode.set_defaults(func=run_encode)

    # Subcommands living in their own modules register themselves.
    for name in ("data", "evaluate", "demo", "index"):
        try:
            module = importlib.import_module(f"lbr.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"lbr.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Deprecation chatter from transformers/peft internals is not actionable for our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LBRError as err:
        if args.debug:
            raise
        print(f"lbr: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lbr: interrupted", file=sys.stderr)
        return 130


def entrypoint() -> None:
    sys.exit(main())
