"""A persisted FAISS index of documents embedded by one lbr model, with ids and snippets.

An index directory holds only safe formats (no pickle):

- ``index.json``: format version, the model's identity (path + fingerprint), counts, and the
  names of the current generation's files. It is replaced atomically and written last, so it
  always names a complete, consistent pair of files.
- ``vectors-<gen>.faiss``: a ``faiss.IndexFlatIP`` (exact inner product = cosine, since lbr
  embeddings are L2-normalised), written with ``faiss.write_index``.
- ``docs-<gen>.jsonl``: one ``{"id", "snippet"}`` per FAISS row, in row order.

Adding documents writes generation ``gen + 1`` next to the old files, switches ``index.json``
to it, then deletes the old generation: a crash at any point leaves a usable index.

The fingerprint hashes the files that decide the embeddings (lbr_config.json,
lbr_modules.safetensors, the weight/adapter safetensors and tokenizer.json), so an index refuses
queries or additions from any other model, including a retrained one in the same directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lbr.data.beir import read_texts
from lbr.data.jsonl import iter_jsonl
from lbr.errors import ConfigError, InputError, LBRError

INDEX_META = "index.json"
FORMAT_VERSION = 1
FINGERPRINT_FILES = ("lbr_config.json", "lbr_modules.safetensors", "tokenizer.json")
_CHUNK = 1 << 20


class IndexMismatchError(LBRError):
    """The index was built with another model."""


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the files of an lbr model directory that determine its embeddings."""
    model_dir = Path(model_dir)
    if not (model_dir / "lbr_config.json").is_file():
        raise InputError(model_dir, "not an lbr model directory (no lbr_config.json)")
    names = {name for name in FINGERPRINT_FILES if (model_dir / name).is_file()}
    names |= {path.name for path in model_dir.glob("*.safetensors")}
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0")
        with (model_dir / name).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Document:
    id: str
    text: str  # the string the model encodes ("title: text" when there is a title)


def read_documents(
    path: str | Path,
    *,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str = "title",
    max_line_bytes: int = 1_000_000,
) -> list[Document]:
    """Documents from a jsonl corpus (BEIR style by default), a BEIR directory, or a .txt file
    (one document a non-blank line, its line number as id): :func:`lbr.data.beir.read_texts`."""
    path = Path(path)
    if path.is_dir():
        path = path / "corpus.jsonl"
    texts = read_texts(
        path, id_field=id_field, text_field=text_field, title_field=title_field, max_line_bytes=max_line_bytes
    )
    return [Document(doc_id, text) for doc_id, text in texts]


def _snippet(text: str, chars: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= chars else text[: max(chars - 1, 0)].rstrip() + "…"


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class SearchHit:
    rank: int
    id: str
    score: float
    snippet: str


class LBRIndex:
    """An opened index directory: metadata, the FAISS index and the row -> document table."""

    def __init__(self, path: Path, meta: dict[str, Any], faiss_index: Any, docs: list[dict[str, str]]) -> None:
        self.path = path
        self.meta = meta
        self.faiss_index = faiss_index
        self.docs = docs

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path: str | Path) -> LBRIndex:
        """Open and check an index directory; every inconsistency is an :class:`InputError`."""
        import faiss

        path = Path(path)
        meta_path = path / INDEX_META
        if not meta_path.is_file():
            raise InputError(path, f"not an lbr index (no {INDEX_META}); build one with `lbr index`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(meta_path, f"invalid JSON: {err.msg}", line=err.lineno) from None
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise InputError(meta_path, f"unsupported index format_version {version!r}")
        for key in ("faiss_file", "docs_file", "num_documents", "model"):
            if key not in meta:
                raise InputError(meta_path, "missing key", field=key)
        vectors = path / meta["faiss_file"]
        docs_path = path / meta["docs_file"]
        for needed in (vectors, docs_path):
            if not needed.is_file():
                raise InputError(needed, "index file is missing; rebuild the index")
        docs = [record for _, record in iter_jsonl(docs_path, required={"id": str, "snippet": str}, allow_empty=True)]
        faiss_index = faiss.read_index(str(vectors))
        if not (faiss_index.ntotal == len(docs) == meta["num_documents"]):
            raise InputError(
                path,
                f"inconsistent index: {faiss_index.ntotal} vectors, {len(docs)} documents, "
                f"index.json says {meta['num_documents']}; rebuild it",
            )
        if faiss_index.d != meta["model"].get("dim"):
            raise InputError(meta_path, f"vectors have dimension {faiss_index.d}, the model {meta['model'].get('dim')}")
        return cls(path, meta, faiss_index, docs)

    @property
    def fingerprint(self) -> str:
        return str(self.meta["model"]["fingerprint"])

    @property
    def model_path(self) -> str:
        return str(self.meta["model"]["path"])

    def __len__(self) -> int:
        return len(self.docs)

    def check_model(self, model_dir: str | Path, fingerprint: str | None = None) -> None:
        """Refuse a model whose fingerprint differs from the one the index was built with."""
        fingerprint = fingerprint or model_fingerprint(model_dir)
        if fingerprint != self.fingerprint:
            raise IndexMismatchError(
                f"{self.path}: built with model {self.model_path} (fingerprint {self.fingerprint[:12]}), "
                f"but {model_dir} has fingerprint {fingerprint[:12]}; use the same model or build a new index"
            )

    def search(self, q_emb: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """Top-k documents for each row of ``q_emb`` (n, d), best first."""
        if k < 1:
            raise ConfigError(f"-k must be at least 1, not {k}")
        q_emb = np.ascontiguousarray(np.atleast_2d(q_emb), dtype=np.float32)
        k = min(k, len(self.docs))
        if k == 0:
            return [[] for _ in range(len(q_emb))]
        scores, rows = self.faiss_index.search(q_emb, k)
        return [
            [
                SearchHit(rank + 1, self.docs[row]["id"], float(score), self.docs[row]["snippet"])
                for rank, (row, score) in enumerate(zip(row_ids, row_scores, strict=True))
                if row >= 0
            ]
            for row_ids, row_scores in zip(rows, scores, strict=True)
        ]


# ---------------------------------------------------------------------- writing
def _previous_meta(output: Path) -> dict[str, Any]:
    """The current index.json (possibly of a broken index being overwritten), or {}."""
    try:
        meta = json.loads((output / INDEX_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _embed(
    encode: Callable[..., np.ndarray],
    texts: Sequence[str],
    batch_size: int,
    show_progress: bool,
) -> np.ndarray:
    """Encode in chunks under one progress bar counted in documents."""
    from tqdm.auto import tqdm

    chunk = max(batch_size * 8, 1)
    parts = []
    with tqdm(total=len(texts), desc="index", unit="doc", disable=not show_progress) as bar:
        for start in range(0, len(texts), chunk):
            piece = list(texts[start : start + chunk])
            parts.append(np.asarray(encode(piece, batch_size=batch_size, show_progress_bar=False), dtype=np.float32))
            bar.update(len(piece))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def check_addition(
    output: str | Path,
    model_dir: str | Path,
    documents: Sequence[Document],
    *,
    source: str,
    fingerprint: str | None = None,
) -> LBRIndex:
    """Open the index at ``output`` and refuse another model or ids it already holds."""
    index = LBRIndex.open(output)
    index.check_model(model_dir, fingerprint)
    known = {doc["id"] for doc in index.docs}
    clashes = [doc.id for doc in documents if doc.id in known]
    if clashes:
        raise InputError(source, f"{len(clashes)} document id(s) already in the index {output}, e.g. {clashes[0]!r}")
    return index


def build_index(
    output: str | Path,
    model: Any,
    model_dir: str | Path,
    documents: Sequence[Document],
    *,
    source: str,
    add: bool = False,
    overwrite: bool = False,
    batch_size: int = 32,
    snippet_chars: int = 300,
    show_progress: bool = True,
) -> LBRIndex:
    """Create an index at ``output`` (or, with ``add``, extend the one there) and return it.

    Args:
        model: the loaded LBRModel (documents are embedded with ``encode_document``).
        model_dir: its directory: its fingerprint is recorded, or checked when adding.
        source: the corpus file, recorded in index.json.
    """
    import faiss

    output = Path(output)
    fingerprint = model_fingerprint(model_dir)
    old: LBRIndex | None = None
    if add:
        old = check_addition(output, model_dir, documents, source=source, fingerprint=fingerprint)
    elif (output / INDEX_META).exists():
        if not overwrite:
            raise ConfigError(
                f"{output}: an index already exists; pass --add to extend it or --overwrite to replace it"
            )
    elif output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output}: exists and is not an lbr index; choose a new directory")
    output.mkdir(parents=True, exist_ok=True)

    d_emb = _embed(model.encode_document, [doc.text for doc in documents], batch_size, show_progress)
    if add and old is not None:
        faiss_index = old.faiss_index
        docs = list(old.docs)
        sources = list(old.meta.get("sources", []))
        created = old.meta.get("created")
    else:
        faiss_index = faiss.IndexFlatIP(model.hidden_size)
        docs, sources, created = [], [], None
    faiss_index.add(np.ascontiguousarray(d_emb))
    docs += [{"id": doc.id, "snippet": _snippet(doc.text, snippet_chars)} for doc in documents]
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sources.append({"file": str(source), "documents": len(documents), "added": now})

    previous = _previous_meta(output)
    generation = int(previous.get("generation", 0)) + 1
    faiss_file, docs_file = f"vectors-{generation:04d}.faiss", f"docs-{generation:04d}.jsonl"
    faiss.write_index(faiss_index, str(output / faiss_file))
    _write_atomic(output / docs_file, "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs))
    meta = {
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "faiss_file": faiss_file,
        "docs_file": docs_file,
        "faiss_type": "IndexFlatIP",
        "similarity": "cosine (inner product of L2-normalised embeddings)",
        "num_documents": len(docs),
        "model": {
            "path": str(Path(model_dir).resolve()),
            "fingerprint": fingerprint,
            "dim": int(model.hidden_size),
            "base_model": model.config.model,
            "query_instruction": model.query_instruction,
        },
        "sources": sources,
        "created": created or now,
        "updated": now,
    }
    _write_atomic(output / INDEX_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    # The new generation is live: the previous one's files are garbage now.
    for name in (previous.get("faiss_file"), previous.get("docs_file")):
        if isinstance(name, str) and name not in (faiss_file, docs_file) and "/" not in name:
            (output / name).unlink(missing_ok=True)
    return LBRIndex(output, meta, faiss_index, docs)
