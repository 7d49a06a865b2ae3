# Sourced by the GPU recipes. pico2wave and espeak-ng read voice data from paths compiled into them
# (/usr/share/pico/lang, /usr/share/mbrola): on a machine without the packages, link those paths to a
# carried bundle's data (data only, nothing executable lands in /usr).
voice_data_links() {  # $1: the bundle's root
  if [ -d "$1/usr/share/pico/lang" ] && [ ! -e /usr/share/pico/lang ]; then
    mkdir -p /usr/share/pico && ln -s "$1/usr/share/pico/lang" /usr/share/pico/lang
  fi
  if [ -d "$1/usr/share/mbrola" ] && [ ! -e /usr/share/mbrola ]; then
    ln -s "$1/usr/share/mbrola" /usr/share/mbrola
  fi
}
