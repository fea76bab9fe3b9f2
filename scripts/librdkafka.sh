#!/usr/bin/env bash
# Puts librdkafka >= 2.16 in DIR with a pkg-config file (rdkafka.pc), for builds with the
# `system-librdkafka` feature (`make` does this). The library is the one inside PyPI's confluent-kafka
# wheel: librdkafka 2.12.1, the version the rdkafka crate bundles, crashes when a broker restarts
# (README, "A broker restart"); 2.16.0 does not. Skipped when DIR already holds it.
# usage: scripts/librdkafka.sh DIR PIP [WHEEL_SPEC]
set -euo pipefail
dir=$1 pip=$2 spec=${3:-confluent-kafka==2.16.1}
min=2.16.0
# The rdkafka-sys build script finds the library with the pkg-config command.
if ! command -v pkg-config >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing pkg-config (apt)"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config; } ||
    { echo "building with librdkafka 2.16 needs pkg-config: apt-get install pkg-config" >&2; exit 1; }
fi
if [ -f "$dir/rdkafka.pc" ] && ls "$dir"/librdkafka-*.so.1 >/dev/null 2>&1; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$pip" download --quiet --no-deps --only-binary :all: -d "$tmp" "$spec" || {
  echo "could not download $spec from PyPI; put a librdkafka >= $min and its rdkafka.pc in $dir" >&2
  exit 1
}
python3 -m zipfile -e "$tmp"/confluent_kafka-*.whl "$tmp/x"
so=$(ls "$tmp"/x/confluent_kafka.libs/librdkafka-*.so.1 | head -1)
[ -f "$so" ] || { echo "no librdkafka in the $spec wheel" >&2; exit 1; }
version=$(python3 -c 'import ctypes, sys
lib = ctypes.CDLL(sys.argv[1]); lib.rd_kafka_version_str.restype = ctypes.c_char_p
print(lib.rd_kafka_version_str().decode())' "$so")
if [ "$(printf '%s\n%s\n' "$min" "$version" | sort -V | head -1)" != "$min" ]; then
  echo "librdkafka $version in $spec is older than $min (which no longer crashes on a broker restart)" >&2
  exit 1
fi
mkdir -p "$dir"
cp "$so" "$dir/"
ln -sf "$(basename "$so")" "$dir/librdkafka.so"
cat > "$dir/rdkafka.pc" <<PC
libdir=$dir
includedir=$dir

Name: librdkafka
Description: librdkafka $version from PyPI's $spec wheel
Version: $version
Libs: -L\${libdir} -lrdkafka
Cflags:
PC
echo "librdkafka $version in $dir"
