"""Domain dataset builders: installed resources -> BEIR data, stage-2 pairs, stage-1 corpora.

``build("medical", out, max_docs=2000, seed=0)`` writes, in ``out``:

- ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{train,dev,test}.tsv`` (BEIR format);
- ``pairs.train.jsonl``, ``pairs.dev.jsonl`` (``{"query", "positive", "negatives"}``);
- ``knowledge.open.jsonl``, ``knowledge.closed.jsonl`` (``{"id", "text"}``);
- ``DATASHEET.md``.

The same seed gives byte-identical files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from lbr.data.builders.common import (
    BuiltDataset,
    DomainSource,
    build_dataset,
    check_no_leakage,
    write_dataset,
)
from lbr.errors import LBRError

DOMAINS = ("medical", "chemistry", "code")
DEFAULT_MAX_DOCS = 2000
DEFAULT_SEED = 0

__all__ = [
    "DOMAINS",
    "BuiltDataset",
    "DomainSource",
    "build",
    "build_dataset",
    "check_no_leakage",
    "load_domain",
    "render_datasheet",
    "write_dataset",
]


def load_domain(domain: str) -> DomainSource:
    """Read one domain's installed resource (imports the builder lazily)."""
    if domain not in DOMAINS:
        raise LBRError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    module = importlib.import_module(f"lbr.data.builders.{domain}")
    loader: Callable[[], DomainSource] = module.load_source
    return loader()


# Bumped whenever a builder change alters any built file, so that a benchmark never mixes data
# of two versions. 2: the closed knowledge corpus counts spelling variants of test queries.
BUILDER_VERSION = 2
VERSION_LINE = "Builder version: {}."


def built_version(data_dir: Path) -> int | None:
    """The builder version a dataset directory was built with (1 for datasheets from before the
    version was written), or None if there is no dataset."""
    sheet = Path(data_dir) / "DATASHEET.md"
    if not sheet.exists():
        return None
    prefix = VERSION_LINE.split("{")[0]
    for line in sheet.read_text(encoding="utf-8").splitlines():
        if line.startswith(prefix):
            try:
                return int(line[len(prefix) :].rstrip("."))
            except ValueError:
                break
    return 1


def build(
    domain: str,
    out: str | Path,
    *,
    max_docs: int = DEFAULT_MAX_DOCS,
    seed: int = DEFAULT_SEED,
) -> BuiltDataset:
    """Build one domain's dataset into ``out`` and return it (with its statistics)."""
    source = load_domain(domain)
    built = build_dataset(source, max_docs=max_docs, seed=seed)
    write_dataset(built, out, render_datasheet(source, built, max_docs=max_docs, seed=seed))
    return built


def render_datasheet(source: DomainSource, built: BuiltDataset, *, max_docs: int, seed: int) -> str:
    """The dataset's DATASHEET.md. No timestamp, so rebuilding gives identical bytes."""
    sheet = source.datasheet
    stats = built.stats
    docs, queries = stats["documents_per_split"], stats["queries_per_split"]
    lines = [
        f"# Datasheet: lbr `{source.domain}` retrieval dataset",
        "",
        f"Built by `lbr data build {source.domain} --max-docs {max_docs} --seed {seed}`. "
        "The same command and seed give byte-identical files.",
        VERSION_LINE.format(BUILDER_VERSION),
        "",
        "## Source",
        f"- Resource: {sheet.get('source', '?')}",
        f"- License: {sheet.get('license', '?')}",
        "- All text comes from the installed resource; nothing was written by hand.",
        "",
        "## How text was derived",
        f"- Document: {sheet.get('document', '?')}",
        f"- Query: {sheet.get('query', '?')}",
        "- A query string naming more than one document, shorter than 4 characters, or found "
        "verbatim in its own document is dropped.",
        f"- Hard negatives (pairs only): {sheet.get('negatives', '?')} Negatives are always train documents.",
        f"- Knowledge corpus: {sheet.get('knowledge', '?')}",
        "- Documents are sampled in whole sibling groups (at most 8 per group) so that hard "
        "negatives exist; groups with two or more members first.",
        "",
        "## Sizes",
        "| file | records |",
        "|---|---|",
        f"| corpus.jsonl | {stats['documents']} documents (mean {stats['mean_doc_words']} words of text) |",
        f"| queries.jsonl | {sum(queries.values())} queries |",
        f"| qrels/train.tsv | {queries['train']} queries over {docs['train']} documents |",
        f"| qrels/dev.tsv | {queries['dev']} queries over {docs['dev']} documents |",
        f"| qrels/test.tsv | {queries['test']} queries over {docs['test']} documents "
        f"({stats['test_docs_without_query']} test documents had no query left and serve as "
        "distractors) |",
        f"| pairs.train.jsonl | {stats['pairs']['train']} pairs "
        f"({stats['pairs_with_hard_negatives']['train']} with hard negatives) |",
        f"| pairs.dev.jsonl | {stats['pairs']['dev']} pairs "
        f"({stats['pairs_with_hard_negatives']['dev']} with hard negatives) |",
        f"| knowledge.open.jsonl | {stats['knowledge_records']['open']} records, "
        f"{stats['knowledge_chars']['open']:,} characters |",
        f"| knowledge.closed.jsonl | {stats['knowledge_records']['closed']} records, "
        f"{stats['knowledge_chars']['closed']:,} characters "
        f"({stats['knowledge_records']['closed_dropped']} records dropped) |",
        "",
        "## Splits",
        "Split by document: each document belongs to exactly one of train, dev and test, so a "
        "test document appears in no pair as a positive or a negative. The corpus holds every "
        "document of every split (retrieval is always over the full corpus). Train documents "
        "keep up to 3 queries, dev and test documents one.",
        "",
        "## What each stage may see",
        "| stage | may read | never contains |",
        "|---|---|---|",
        "| stage 1, open setting | knowledge.open.jsonl: the whole resource (`lbr benchmark` "
        "reads the records of the corpus documents only) | nothing is removed: test queries' "
        "strings occur, most of them in their own document's record (as in the paper) |",
        "| stage 1, closed setting | knowledge.closed.jsonl | any test query string (synonyms/"
        "names/summary lines equal to a test query once case, punctuation and spaces are "
        "ignored are left out, then any record still containing one is dropped; checked at "
        "build time) |",
        "| stage 2 | pairs.train.jsonl (training), pairs.dev.jsonl (validation) | any test "
        "query string, in queries, positives or negatives (checked at build time); any test "
        "document |",
        "| evaluation | corpus.jsonl, queries.jsonl, qrels/test.tsv | - |",
        "",
        "Checks compare lower-cased, whitespace-collapsed text by substring; knowledge.closed.jsonl "
        "is also checked with punctuation and spaces ignored, from word edge to word edge "
        '("tert-butylx" counts as the query "tert butyl x"; "methanol" does not hold "ethanol"). '
        "A failed check stops the build with an error.",
        "",
    ]
    return "\n".join(lines)
