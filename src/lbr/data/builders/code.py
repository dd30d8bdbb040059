"""Code domain: the Python standard library of the running interpreter, read with ``ast``.

Query = the summary line of a function's docstring; document = the function's code with the
docstring removed (first lines only), titled by its qualified name.
Knowledge corpus = every function and method of the library, with its docstring.
"""

from __future__ import annotations

import ast
import platform
import sysconfig
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lbr.data.builders.common import DomainSource, SourceDoc, has_letters, squash

# Tests, demos and vendored/installed packages are not the library's own API.
SKIPPED_DIRS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
    "lib2to3",
    "ensurepip",
}
MAX_DOC_LINES = 12
MAX_DOC_CHARS = 400
MAX_KNOWLEDGE_CHARS = 1500
MIN_SUMMARY_CHARS = 15
MAX_SUMMARY_CHARS = 160


@dataclass(frozen=True)
class Function:
    qualname: str  # module.Class.function
    module: str
    summary: str  # first line of the docstring, "" if none
    code: str  # source without the docstring, dedented
    source: str  # full source, dedented


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in SKIPPED_DIRS for part in parts[:-1]) or parts[-1].startswith("test_"):
            continue
        files.append(path)
    return files


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def extract_functions(path: Path, module: str) -> list[Function]:
    """Every function and method of one file (nested functions included)."""
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old modules
            tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = source.splitlines()
    functions: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append(_function(child, lines, module, prefix))
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return functions


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], module: str, prefix: str) -> Function:
    start, end = node.lineno - 1, node.end_lineno or node.lineno
    docstring = ast.get_docstring(node)
    summary = ""
    keep = list(range(start, end))
    if docstring is not None:
        summary = " ".join(docstring.strip().splitlines()[0].split()) if docstring.strip() else ""
        first = node.body[0]
        removed = set(range(first.lineno - 1, first.end_lineno or first.lineno))
        keep = [i for i in keep if i not in removed]
    code = textwrap.dedent("\n".join(lines[i] for i in keep)).strip("\n")
    full = textwrap.dedent("\n".join(lines[start:end])).strip("\n")
    only_docstring = docstring is not None and len(node.body) == 1
    return Function(
        qualname=f"{module}.{prefix}{node.name}" if module else f"{prefix}{node.name}",
        module=module,
        summary=summary,
        code="" if only_docstring else code,
        source=full,
    )


def truncate_code(code: str, max_lines: int = MAX_DOC_LINES, max_chars: int = MAX_DOC_CHARS) -> str:
    """Keep whole lines up to both caps; mark the cut with a comment."""
    kept: list[str] = []
    size = 0
    for line in code.splitlines():
        if len(kept) >= max_lines or (kept and size + len(line) + 1 > max_chars):
            return "\n".join(kept) + "\n    # …"
        kept.append(line[:max_chars])
        size += len(line) + 1
    return "\n".join(kept)


def load_source() -> DomainSource:
    """Parse the standard library into documents, queries and a knowledge renderer."""
    root = stdlib_dir()
    functions: list[Function] = []
    for path in tqdm(iter_files(root), desc="code: parsing the standard library", unit=" files"):
        functions.extend(extract_functions(path, module_name(root, path)))
    functions.sort(key=lambda f: f.qualname)
    # Overloads, properties with setters and platform variants share a qualified name; keep
    # the first so ids stay unique.
    functions = list({f.qualname: f for f in reversed(functions)}.values())[::-1]
    functions.sort(key=lambda f: f.qualname)

    docs = []
    for function in functions:
        summary = function.summary
        if not function.code or not MIN_SUMMARY_CHARS <= len(summary) <= MAX_SUMMARY_CHARS or not has_letters(summary):
            continue
        package = function.module.split(".")[0]
        docs.append(
            SourceDoc(
                doc_id=function.qualname,
                title=function.qualname,
                text=truncate_code(function.code),
                queries=(summary,),
                groups=(f"module:{function.module}", f"package:{package}"),
            )
        )

    def render_knowledge(exclude: set[str]) -> list[dict[str, str]]:
        records = []
        for function in functions:
            source = function.source
            if function.summary and squash(function.summary) in exclude:
                # Closed setting: the docstring's summary line is a test query; cut it out.
                source = "\n".join(line for line in source.splitlines() if function.summary not in line)
            text = f"# {function.qualname}\n{truncate_code(source, 10**6, MAX_KNOWLEDGE_CHARS)}"
            records.append({"id": function.qualname, "text": text})
        return records

    version = platform.python_version()
    return DomainSource(
        domain="code",
        docs=docs,
        render_knowledge=render_knowledge,
        datasheet={
            "source": f"Python {version} standard library ({root}), parsed with ast; "
            f"{len(functions):,} functions and methods (tests, idlelib tests, turtledemo, "
            "lib2to3, ensurepip and site-packages skipped)",
            "license": "PSF License (Python standard library)",
            "document": f"title = qualified name (module.Class.function); text = the function's "
            f"source without its docstring, dedented, first {MAX_DOC_LINES} lines / "
            f"{MAX_DOC_CHARS} characters. Id = qualified name.",
            "query": f"the first line of the docstring ({MIN_SUMMARY_CHARS}-"
            f"{MAX_SUMMARY_CHARS} characters); summaries shared by several functions dropped.",
            "negatives": "train functions from the same module, then the same top-level package.",
            "knowledge": f"every function and method with its docstring, first "
            f"{MAX_KNOWLEDGE_CHARS} characters, prefixed by its qualified name.",
        },
    )
