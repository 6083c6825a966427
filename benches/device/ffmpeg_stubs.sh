#!/usr/bin/env bash
# Builds stand-in FFmpeg libraries for running the videosdgx binary on a machine without FFmpeg
# (the lent GPU image). Every FFmpeg function the binary imports exists under its soname and
# symbol version but aborts when called, so the binary loads (it binds all symbols at start)
# and runs every workflow that saves no video.
# Usage: ffmpeg_stubs.sh BINARY OUT_DIR   (then LD_LIBRARY_PATH=OUT_DIR:... BINARY ...)
set -euo pipefail
binary=$1 out=$2
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
objdump -T "$binary" | awk 'NF > 1 && $(NF-1) ~ /^\(LIB(AV|SW)/ {print substr($(NF-1), 2, length($(NF-1)) - 2), $NF}' \
    | sort -u > "$work/symbols"
readelf -d "$binary" | sed -n 's/.*Shared library: \[\(lib\(av\|sw\)[a-z]*\.so\.[0-9]*\)\]/\1/p' \
    | while read -r soname; do
        # libavcodec.so.59 exports version LIBAVCODEC_59.
        stem=${soname%%.so.*}
        version=$(echo "$stem" | tr a-z A-Z)_${soname##*.so.}
        {
            echo '#include <stdlib.h>'
            awk -v v="$version" '$1 == v {print "void " $2 "(void) { abort(); }"}' "$work/symbols"
        } > "$work/$stem.c"
        echo "$version { global: *; };" > "$work/$stem.map"
        cc -shared -fPIC -o "$out/$soname" -Wl,-soname,"$soname" \
            -Wl,--version-script="$work/$stem.map" "$work/$stem.c"
    done
echo "stubs in $out: $(ls "$out" | tr '\n' ' ')"
