"""Make Debian's WordNet 3.0 readable by NLTK (docs/DESIGN_NOTES.md, offline assets), and check whether it is.

NLTK 3.10 refuses to read `/usr/share/wordnet` in place and Debian ships no `lexnames` file,
so `install_wordnet` copies the database into `<nltk_data>/corpora/wordnet` and writes
`lexnames` from the lexnames(5WN) man page. Run it once (CI does):

    apt-get install -y wordnet-base wordnet-sense-index
    python -m sec_engine.data.wordnet_setup [NLTK_DATA_DIR]

At run time WordNet is optional: `wordnet_available()` says whether the synonym operator can
use it; embedding-neighbour synonyms need nothing installed.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
_POS_CODE = {"noun": 1, "verb": 2, "adj": 3}


def default_nltk_data() -> Path:
    env = os.environ.get("NLTK_DATA")
    return Path(env.split(os.pathsep)[0]) if env else Path.home() / "nltk_data"


def lexnames_from_man(man_page: Path) -> str:
    """`NN<TAB>pos.name<TAB>code` lines, as NLTK's reader expects, from the man page."""
    text = gzip.decompress(man_page.read_bytes()).decode("utf-8", errors="replace")
    lines = []
    for raw in text.splitlines():
        m = re.match(r"^(\d\d)\t(\S+)", raw)
        if m:
            name = m.group(2)
            code = _POS_CODE.get(name.split(".")[0], 4)
            lines.append(f"{m.group(1)}\t{name}\t{code}")
    if not lines:
        raise ValueError(f"no lexname entries found in {man_page}")
    return "\n".join(lines) + "\n"


def install_wordnet(
    nltk_data: Path | None = None,
    source: Path = DEBIAN_WORDNET,
    man_page: Path = LEXNAMES_MAN,
) -> Path:
    """Copy WordNet into `<nltk_data>/corpora/wordnet` and write `lexnames`; return the dir."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source} not found: apt-get install -y wordnet-base")
    target = (nltk_data or default_nltk_data()) / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    (target / "lexnames").write_text(lexnames_from_man(man_page), encoding="utf-8")
    return target


@functools.cache
def wordnet_available() -> bool:
    """True when `nltk.corpus.wordnet` loads and answers a lookup (cached per process)."""
    try:
        from nltk.corpus import wordnet

        return bool(wordnet.synsets("good"))
    except (LookupError, OSError, ImportError, ValueError):
        return False


def main(argv: list[str]) -> int:
    target = install_wordnet(Path(argv[0]) if argv else None)
    print(f"WordNet installed in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
