#!/usr/bin/env bash
# Build the docs in every language: docs/_build/html/<lang>/index.html for
# en, zh_CN, ja and si, with warnings as errors. docs/README.md explains.
#
#   scripts/build_docs.sh                 build all four languages
#   scripts/build_docs.sh --lang "en ja"  only these
#   scripts/build_docs.sh --out DIR       build into DIR/html/<lang>/ (default docs/_build)
#   scripts/build_docs.sh --no-strict     warnings do not fail the build
#   scripts/build_docs.sh --update-po     merge changed English text into docs/locale/*.po
#   scripts/build_docs.sh --check-po      fail if a message of a translated page lacks a translation
#
# Needs the docs extra: pip install -e '.[docs]'.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
OUT=docs/_build
LANGS="en zh_CN ja si"
STRICT=(-W --keep-going)
PO_ACTION=""

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --lang) LANGS="$2"; shift 2 ;;
        --no-strict) STRICT=(); shift ;;
        --update-po) PO_ACTION=update; shift ;;
        --check-po) PO_ACTION=check; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_docs.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

if ! "$PYTHON" -c "import sphinx, myst_parser" 2>/dev/null; then
    echo "build_docs.sh: Sphinx and myst-parser are missing: pip install -e '.[docs]'" >&2
    exit 2
fi

if [ -n "$PO_ACTION" ]; then
    exec "$PYTHON" docs/_ext/i18n_catalogs.py "$PO_ACTION"
fi

mkdir -p "$OUT/html" "$OUT/logs"
start=$(date +%s)

# One sphinx-build per language, side by side (each imports torch once).
declare -A pids
for lang in $LANGS; do
    rm -rf "$OUT/html/$lang" "$OUT/doctrees/$lang"
    "$PYTHON" -m sphinx -b html -E -q "${STRICT[@]}" -D language="$lang" \
        -d "$OUT/doctrees/$lang" docs "$OUT/html/$lang" >"$OUT/logs/$lang.log" 2>&1 &
    pids[$lang]=$!
done

failed=""
for lang in $LANGS; do
    if wait "${pids[$lang]}"; then
        echo "built $lang: $OUT/html/$lang/index.html"
    else
        echo "FAILED $lang (log: $OUT/logs/$lang.log):"
        sed 's/^/    /' "$OUT/logs/$lang.log"
        failed="$failed $lang"
    fi
done

# The entry point: docs/_build/html/index.html sends a browser to the English docs.
cat >"$OUT/html/index.html" <<'EOF'
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layernorm docs</title>
<meta http-equiv="refresh" content="0; url=en/index.html"></head>
<body><p>layernorm docs: <a href="en/index.html">English</a> ·
<a href="zh_CN/index.html" lang="zh-CN">中文</a> · <a href="ja/index.html" lang="ja">日本語</a> ·
<a href="si/index.html" lang="si">සිංහල</a></p></body></html>
EOF

echo "docs built in $(( $(date +%s) - start )) s"
if [ -n "$failed" ]; then
    echo "build_docs.sh: failed:$failed" >&2
    exit 1
fi
