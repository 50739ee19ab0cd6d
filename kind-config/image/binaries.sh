#!/bin/sh
# Prints the binaries the podmeter image holds, one per line, read from the
# COPY lines of a Containerfile (default: the Containerfile beside this
# script). The Containerfile is the one place that list lives: image.sh and
# the build stage of Containerfile.build both build exactly these.
# POSIX sh: it also runs inside the Rust build image.
set -eu
file=${1:-$(dirname "$0")/Containerfile}
[ -r "$file" ] || { echo "binaries.sh: cannot read $file" >&2; exit 1; }
# Every word of a COPY line of the form [/out/]bin/NAME is a binary.
list=$(awk '
  toupper($1) == "COPY" {
    for (i = 2; i <= NF; i++)
      if (match($i, /^(\/out\/)?bin\/[A-Za-z0-9_.-]+$/)) { sub(/.*\//, "", $i); print $i }
  }' "$file" | sort -u)
[ -n "$list" ] || { echo "binaries.sh: no COPY of bin/NAME in $file" >&2; exit 1; }
printf '%s\n' "$list"
