#!/usr/bin/env bash
# Installs every Debian package dspy.c needs to build and test (libmicrohttpd: the HTTP server;
# clang + libclang-rt-14-dev + libomp-dev: the libFuzzer build of `make fuzz`). Idempotent, no prompts.
# Run as root (or with sudo available). Safe to run again: installs only what is missing.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config
      libjansson-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev libpcre2-dev
      libmicrohttpd-dev
      clang libclang-rt-14-dev libomp-dev
      python3 python3-yaml
      chromium chromium-driver)
# chromium: test_report_browser renders the HTML report headless (DevTools protocol over a pipe);
# chromium-driver: the same browser for WebDriver clients. python3-yaml: test_track reads the
# MLflow file store's meta.yaml back with PyYAML, the parser MLflow itself uses.
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the OpenAI SDK e2e test; use any node/npm already on PATH.
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install-deps: all packages present"
