#!/usr/bin/env bash
# Installs what building the engine needs beyond Rust, when missing: the
# Kafka client (rdkafka) compiles librdkafka from source, which takes cmake
# and libcurl's headers (Debian/Ubuntu package names). Used by the demo and
# the test command; safe to run again.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need+=(libcurl4-openssl-dev)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "building sluice needs: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "==> installing ${need[*]} (for librdkafka)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
