"""`lbr index` and `lbr search`: a persisted FAISS index of a corpus, and queries against it."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``index`` and ``search`` commands to an argparse subparsers object."""
    index = subparsers.add_parser(
        "index",
        help="embed a corpus into a persisted FAISS index",
        description=(
            "Embed every document of a corpus with an lbr model and write a FAISS index with the "
            "document ids, snippets and the model's fingerprint. --add extends an existing index "
            "(with the same model only)."
        ),
    )
    index.add_argument("--model", required=True, help="an lbr model directory")
    index.add_argument(
        "--corpus",
        required=True,
        help="BEIR corpus.jsonl (or its directory), any .jsonl with id/text(/title) fields, or .txt (one per line)",
    )
    index.add_argument("--output", required=True, help="index directory")
    mode = index.add_mutually_exclusive_group()
    mode.add_argument("--add", action="store_true", help="add the corpus to the existing index in --output")
    mode.add_argument("--overwrite", action="store_true", help="replace the index in --output")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--id-field", default="_id", help="jsonl id field (default _id; line number if absent)")
    index.add_argument("--text-field", default="text")
    index.add_argument("--title-field", default="title", help="optional jsonl title field (encoded as 'title: text')")
    index.add_argument("--snippet-chars", type=int, default=300, help="characters of each document kept for display")
    index.add_argument("--max-line-bytes", type=int, default=1_000_000)
    index.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    index.set_defaults(func=run_index)

    search = subparsers.add_parser(
        "search",
        help="query an index built by `lbr index`",
        description="Embed each query with the index's model (and its query instruction) and print the top k.",
    )
    search.add_argument("--index", required=True, help="index directory")
    search.add_argument("query", nargs="+", help="one or more queries")
    search.add_argument("-k", "--top-k", type=int, default=10, help="documents per query (default 10)")
    search.add_argument("--json", action="store_true", help="one JSON object per query, one per line")
    search.add_argument("--model", help="the model directory, if it moved since indexing (fingerprint-checked)")
    search.set_defaults(func=run_search)


def run_index(args: argparse.Namespace) -> int:
    from lbr.errors import ConfigError
    from lbr.integrations.index import build_index, check_addition, read_documents
    from lbr.modeling import LBRModel

    if args.batch_size < 1 or args.snippet_chars < 0:
        raise ConfigError("--batch-size must be >= 1 and --snippet-chars >= 0")
    documents = read_documents(
        args.corpus,
        id_field=args.id_field,
        text_field=args.text_field,
        title_field=args.title_field,
        max_line_bytes=args.max_line_bytes,
    )
    if args.add:
        # Refuse a mismatched model or clashing ids before paying for loading the model.
        check_addition(args.output, args.model, documents, source=str(args.corpus))
    model = LBRModel.load(args.model)
    started = time.perf_counter()
    show_progress = not args.no_progress and sys.stderr.isatty()
    result = build_index(
        args.output,
        model,
        args.model,
        documents,
        source=str(args.corpus),
        add=args.add,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        snippet_chars=args.snippet_chars,
        show_progress=show_progress,
    )
    seconds = time.perf_counter() - started
    verb = "added" if args.add else "indexed"
    print(
        f"{verb} {len(documents)} documents in {seconds:.1f} s ({len(documents) / max(seconds, 1e-9):.1f} doc/s); "
        f"{args.output} now holds {len(result)} documents (dim {model.hidden_size})"
    )
    return 0


def run_search(args: argparse.Namespace) -> int:
    from lbr.integrations.index import LBRIndex
    from lbr.modeling import LBRModel

    index = LBRIndex.open(args.index)
    model_dir = args.model or index.model_path
    index.check_model(model_dir)
    model = LBRModel.load(model_dir)
    q_emb = model.encode_query(args.query, show_progress_bar=False)
    results = index.search(q_emb, args.top_k)
    width = shutil.get_terminal_size((120, 20)).columns
    for number, (query, hits) in enumerate(zip(args.query, results, strict=True)):
        if args.json:
            record = {"query": query, "results": [hit.__dict__ for hit in hits]}
            print(json.dumps(record, ensure_ascii=False))
            continue
        if len(args.query) > 1:
            print(("" if number == 0 else "\n") + f"query: {query}")
        id_width = max((len(hit.id) for hit in hits), default=2)
        for hit in hits:
            head = f"{hit.rank:>3}  {hit.score:.4f}  {hit.id:<{id_width}}  "
            room = max(width - len(head), 20)
            snippet = hit.snippet if len(hit.snippet) <= room else hit.snippet[: room - 1] + "…"
            print(head + snippet)
    return 0
