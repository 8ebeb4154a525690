#!/usr/bin/env bash
# Solara's page loads its JavaScript from a CDN at run time; offline machines (CI here) serve it from
# $PREFIX/share/solara/cdn instead. Fetch the four packages from the npm registry with `npm pack`.
# Usage: .ci/solara_assets.sh [PREFIX]   (default: the active Python's sys.prefix)
set -euo pipefail
PREFIX=${1:-$(python -c 'import sys; print(sys.prefix)')}
DEST="$PREFIX/share/solara/cdn"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for spec in "@widgetti/solara-vuetify-app@10.1.1" "requirejs@2.3.6" "font-awesome@4.5.0" \
            "@widgetti/vue-grid-layout@2.3.13-alpha.2"; do
    target="$DEST/$spec"
    if [ -f "$target/package.json" ]; then continue; fi
    mkdir -p "$target"
    (cd "$TMP" && npm pack --silent "$spec" > pack.txt)
    tarball="$TMP/$(tail -n 1 "$TMP/pack.txt")"
    tar -xzf "$tarball" -C "$target" --strip-components=1
    rm -f "$tarball"
done
echo "solara CDN assets in $DEST"
