#!/usr/bin/env bash
# Install WordNet 3.0 where NLTK finds it, for the augmentation's synonym operator (docs/DESIGN_NOTES.md, offline assets).
#
# NLTK cannot read Debian's /usr/share/wordnet in place (its path sandbox refuses it, and Debian
# ships no `lexnames` file), so the files are copied to $NLTK_DATA/corpora/wordnet and `lexnames`
# is rebuilt, by the engine's `python -m sec_engine.data.wordnet_setup` when the lexnames man
# page is there. $NLTK_DATA defaults to $VENV/nltk_data, which is on NLTK's
# default search path (sys.prefix/nltk_data), so nothing needs to be exported afterwards.
#
# Best effort: WordNet is optional at run time (the embedding-neighbour synonyms always work), so
# a machine without apt or without root gets a warning, not a failed install.
set -euo pipefail

VENV="${VENV:-.venv}"
NLTK_DATA="${NLTK_DATA:-$VENV/nltk_data}"
DEST="$NLTK_DATA/corpora/wordnet"

if [[ -f "$DEST/lexnames" && -f "$DEST/data.noun" ]]; then
    echo "WordNet already installed in $DEST"
    exit 0
fi

if [[ ! -f /usr/share/wordnet/data.noun ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends \
                    wordnet-base wordnet-sense-index >/dev/null; } \
            || { echo "warning: could not install WordNet with apt; skipping" >&2; exit 0; }
    else
        echo "warning: WordNet is not installed and apt-get (as root) is unavailable; skipping" >&2
        exit 0
    fi
fi

MAN=/usr/share/man/man5/lexnames.5WN.gz
if [[ -f "$MAN" ]]; then
    # The engine's own installer (copies the database, writes lexnames from the man page).
    "${PYTHON:-$VENV/bin/python}" -m sec_engine.data.wordnet_setup "$NLTK_DATA"
    exit 0
fi

# Slim images (python:*-slim) drop man pages; the lexnames table is fixed in WordNet 3.0
# (number, name, syntactic category), so write it here.
mkdir -p "$DEST"
cp -r /usr/share/wordnet/. "$DEST/"
i=0
for name in adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact \
    noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling \
    noun.food noun.group noun.location noun.motive noun.object noun.person noun.phenomenon \
    noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape \
    noun.state noun.substance noun.time verb.body verb.change verb.cognition \
    verb.communication verb.competition verb.consumption verb.contact verb.creation \
    verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative \
    verb.weather adj.ppl; do
    case "${name%%.*}" in noun) n=1 ;; verb) n=2 ;; adj) n=3 ;; *) n=4 ;; esac
    printf '%02d\t%s\t%d\n' "$i" "$name" "$n"
    i=$((i + 1))
done > "$DEST/lexnames"
echo "WordNet installed in $DEST"
