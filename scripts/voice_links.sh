# Sourced by the GPU recipes. pico2wave and espeak-ng read voice data from paths compiled into them
# (/usr/share/pico/lang, /usr/share/mbrola): on a machine without the packages, link those paths to a
# carried bundle's data (data only, nothing executable lands in /usr).
voice_data_links() {  # $1: the bundle's root
  if [ -d "$1/usr/share/pico/lang" ] && [ ! -e /usr/share/pico/lang ]; then
    mkdir -p /usr/share/pico && ln -s "$1/usr/share/pico/lang" /usr/share/pico/lang
  fi
  local mbrola="$1/usr/share/mbrola"  # Debian's mbrola-* packages put the voices in espeak-ng's data
  [ -d "$mbrola" ] || mbrola="$1/usr/lib/x86_64-linux-gnu/espeak-ng-data/mbrola"
  if [ -d "$mbrola" ] && [ ! -e /usr/share/mbrola ]; then
    ln -s "$mbrola" /usr/share/mbrola
  fi
}
