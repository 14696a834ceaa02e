#!/usr/bin/env bash
# Installs what moongate needs to build and test on Debian 12. Idempotent: packages already
# present are not reinstalled, and apt-get update runs only when something is missing.
set -euo pipefail

need=(build-essential cmake pkg-config liblua5.4-dev libcurl4-openssl-dev libcjson-dev
      libmicrohttpd-dev python3 curl)
if [[ ${1:-} == --test ]]; then
  # nghttp2-proxy (nghttpx), openssl and iproute2 (ss): the HTTP/2-over-TLS upstream test;
  # slowhttptest: the slow-client smoke (tests/soak/).
  need+=(clang libclang-rt-dev nodejs npm nghttp2-proxy openssl iproute2 slowhttptest)
fi

missing=()
for p in "${need[@]}"; do
  # nodejs/npm may come from another source (e.g. nodesource) that bundles npm in nodejs.
  if [[ $p == npm ]] && command -v npm >/dev/null; then continue; fi
  if [[ $p == nodejs ]] && command -v node >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
