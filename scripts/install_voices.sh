#!/usr/bin/env bash
# Installs the corpus voices Debian ships outside `main`: SVOX Pico (non-free: libttspico-utils) and MBROLA
# (contrib: mbrola and its German, French and English voices). The system's own apt sources stay as they
# are: apt reads a sources file of this project's own, derived from the machine's with the contrib and
# non-free components added, and keeps its package lists under .make/apt-voices.
# Usage: scripts/install_voices.sh PACKAGE...   (installs what is missing)
#        scripts/install_voices.sh --lists       (only the package lists, for `apt-get download` with them)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --lists ]; then missing=""; else
  # installed means "install ok installed" (`dpkg -s` also succeeds for a removed package's leftover config)
  missing=$(for p in "$@"; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
  [ -z "$missing" ] && exit 0
fi
dir=.make/apt-voices
rm -rf "$dir" && mkdir -p "$dir/sources.list.d" "$dir/lists/partial"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then  # deb822 format
  sed -E 's/^(Components:.*)$/\1 contrib non-free/' /etc/apt/sources.list.d/debian.sources \
    > "$dir/sources.list.d/ctxprune.sources"
elif [ -f /etc/apt/sources.list ]; then  # one-line format
  sed -E 's/^(deb(-src)? .*)$/\1 contrib non-free/' /etc/apt/sources.list > "$dir/sources.list.d/ctxprune.list"
else
  echo "error: no Debian apt sources found; install $missing by hand, or use \`ctxprune data build --preset espeak\`" >&2
  exit 1
fi
sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
apt=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$PWD/$dir/sources.list.d"
     -o "Dir::State::Lists=$PWD/$dir/lists")
if [ -z "$missing" ]; then $sudo apt-get "${apt[@]}" update -q; exit; fi
echo "installing the corpus voices from Debian contrib/non-free (Pico, MBROLA):" $missing
if ! { $sudo apt-get "${apt[@]}" update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt[@]}" install -y -q $missing; }; then
  echo "error: could not install $missing from Debian's contrib and non-free components;" \
    "\`ctxprune data build --preset espeak\` still works without them" >&2
  exit 1
fi
