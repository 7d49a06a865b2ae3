"""Parallel English <-> X sentences from the gettext catalogs that Debian packages install.

Each `/usr/share/locale/<lang>/LC_MESSAGES/*.mo` maps an English UI string (msgid) to its translation.
We keep natural sentences only: 3-20 words on both sides, and nothing that a speaker would not say
or a listener could not hear: format placeholders, markup, keyboard accelerators, paths, URLs,
command-line options, identifiers. The texts are the packages' (mostly GPL/LGPL): they are read at
build time and never committed.
"""

from __future__ import annotations

import gettext
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

LOCALE_DIR = Path("/usr/share/locale")
MIN_WORDS, MAX_WORDS = 3, 20
# GTK 3's catalogs come with Chromium (installed for the web page's test), not with the corpus' text
# sources; left out, so that the corpus plan does not change with the browser
EXCLUDED_DOMAINS = frozenset({"gtk30", "gtk30-properties"})

_REJECT = re.compile(
    r"""
      %[-+ #0]*(\d+|\*)?(\.\d+)?[hlLqjzt]*[diouxXeEfFgGcrsaAp]   # printf placeholders
    | %\(\w+\)\w | %\d | %%                                      # python / positional
    | \{[^}]*\}                                                  # {0} {name}
    | \$\{?\w+ | @\w+@                                           # shell / autoconf variables
    | <[^>]*> | &\w+;                                            # markup and entities
    | (^|[\s(])_\w | &\w | ~\w                                   # accelerators
    | \w_\w | \w\.\w+\( | ::                                     # identifiers, calls
    | (^|[\s"'(])[~.]{0,2}/\w | \\\w | \w/\w+/                   # paths
    | https?: | www\. | \w@\w                                    # URLs and e-mail
    | (^|\s)--?\w                                                # command-line options
    | [|\t\n\r\x04]                                              # context separators, layout
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Pair:
    english: str
    text: str
    source: str  # the catalog it came from, e.g. "coreutils.mo"


def _clean(s: str) -> str:
    return " ".join(unicodedata.normalize("NFC", s).replace("\u00a0", " ").split())


def is_natural_sentence(s: str) -> bool:
    """A string a person could read aloud: 3-20 words, mostly letters, no UI or code artefacts."""
    words = s.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or _REJECT.search(s):
        return False
    letters = sum(ch.isalpha() for ch in s)
    if letters < 0.7 * len(s.replace(" ", "")) or not s[0].isalpha():
        return False
    return sum(w.isupper() and len(w) > 1 for w in words) <= 1  # not SHOUTED or acronym soup


def catalogs(language: str, locale_dir: Path = LOCALE_DIR) -> list[Path]:
    found = sorted((locale_dir / language / "LC_MESSAGES").glob("*.mo"))
    return [mo for mo in found if mo.stem not in EXCLUDED_DOMAINS]


def catalogs_digest(languages: list[str], locale_dir: Path = LOCALE_DIR) -> str:
    """Identifies the installed catalogs, so a build records exactly which texts it could draw on."""
    h = hashlib.sha256()
    for lang in languages:
        for mo in catalogs(lang, locale_dir):
            h.update(f"{lang}/{mo.name}:{mo.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def read_pairs(language: str, locale_dir: Path = LOCALE_DIR) -> list[Pair]:
    """Clean, deduplicated (by either side) sentence pairs for one language, in a deterministic order."""
    seen_en: set[str] = set()
    seen_x: set[str] = set()
    pairs = []
    for mo in catalogs(language, locale_dir):
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, ValueError):  # a broken or non-UTF-8 catalog is skipped
            continue
        for msgid, msgstr in sorted((k, v) for k, v in catalog.items() if isinstance(k, str)):
            en, x = _clean(msgid), _clean(msgstr)
            if not en or not x or en == x or en.casefold() in seen_en or x.casefold() in seen_x:
                continue
            if is_natural_sentence(en) and is_natural_sentence(x):
                seen_en.add(en.casefold())
                seen_x.add(x.casefold())
                pairs.append(Pair(en, x, mo.name))
    return pairs
