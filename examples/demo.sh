#!/usr/bin/env bash
# moongate in one command: a gateway in front of two upstreams, the first of which is down.
#
#   examples/demo.sh
#
# What happens:
#   1. build/moongate is built if it is missing (cmake);
#   2. two fake upstreams start (tests/mock_upstream.py): "local" is down (its port is reserved
#      but nothing listens, like LM Studio when it is not running) and "backup" answers;
#   3. a config names local/minimax-m2.1-gs32 as the primary model and backup/qwen3-8b as the
#      fallback, and moongate starts on it;
#   4. one request asks for model "default": moongate tries local, gets "connection refused",
#      falls back to backup, and says so in the x-moongate-model / x-moongate-route headers and
#      in its access log line.
# Everything runs on 127.0.0.1 and is cleaned up on exit. Needs python3 and curl.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MOONGATE_BIN:-$ROOT/build/moongate}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/moongate-demo.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Waits for "READY <port>" from a mock and prints the port.
ready_port() {
    for _ in $(seq 200); do
        if grep -q '^READY ' "$1" 2>/dev/null; then awk '/^READY /{print $2; exit}' "$1"; return; fi
        sleep 0.05
    done
    echo "a mock upstream did not start; its output:" >&2; cat "$1" >&2; exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. Build if needed.
if [ ! -x "$BIN" ]; then
    step "Building moongate (first run only)"
    cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$ROOT/build" -j"$(nproc)" --target moongate
fi

# 2. Two upstreams.
step "Starting two mock upstreams"
python3 "$ROOT/tests/mock_upstream.py" --port 0 --name local --mode down >"$WORK/local.out" &
PIDS+=($!)
python3 "$ROOT/tests/mock_upstream.py" --port 0 --name backup >"$WORK/backup.out" &
PIDS+=($!)
LOCAL_PORT=$(ready_port "$WORK/local.out")
BACKUP_PORT=$(ready_port "$WORK/backup.out")
echo "local  http://127.0.0.1:$LOCAL_PORT/v1   (down: nothing listens there)"
echo "backup http://127.0.0.1:$BACKUP_PORT/v1   (answers)"

# 3. A config in OpenClaw's format, and the gateway.
cat >"$WORK/moongate.json5" <<EOF
// The same shape as an OpenClaw model config (JSON5: comments and trailing commas are fine).
{
  models: {
    mode: "replace",   // only the providers below, no built-in hosted ones
    providers: {
      local: {
        baseUrl: "http://127.0.0.1:$LOCAL_PORT/v1",
        api: "openai-completions",
        models: [{ id: "minimax-m2.1-gs32", name: "MiniMax M2.1", contextWindow: 196608, maxTokens: 8192 }],
      },
      backup: {
        baseUrl: "http://127.0.0.1:$BACKUP_PORT/v1",
        api: "openai-completions",
        apiKey: "\${DEMO_BACKUP_KEY}",   // keys come from the environment, never from the file
        models: [{ id: "qwen3-8b", name: "Qwen3 8B", contextWindow: 32768, maxTokens: 4096 }],
      },
    },
  },
  agents: {
    defaults: {
      model: { primary: "local/minimax-m2.1-gs32", fallbacks: ["backup/qwen3-8b"] },
    },
  },
}
EOF
step "Config ($WORK/moongate.json5)"
cat "$WORK/moongate.json5"

PORT=$(free_port)
step "Starting moongate on 127.0.0.1:$PORT"
DEMO_BACKUP_KEY=sk-demo-not-a-real-key \
    "$BIN" serve --config "$WORK/moongate.json5" --listen "127.0.0.1:$PORT" 2>"$WORK/moongate.log" &
PIDS+=($!)
for _ in $(seq 200); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
        echo "moongate exited; its log:" >&2; cat "$WORK/moongate.log" >&2; exit 1
    fi
    sleep 0.05
done

# 4. One request for model "default".
step "Request: POST /v1/chat/completions with model \"default\""
curl -sS "http://127.0.0.1:$PORT/v1/chat/completions" \
    -H 'Content-Type: application/json' \
    -d '{"model": "default", "messages": [{"role": "user", "content": "Hello from the demo"}]}' \
    -D "$WORK/headers" -o "$WORK/body"

step "Response body"
python3 -m json.tool "$WORK/body" || cat "$WORK/body"

step "Which model answered, and how (response headers)"
grep -i '^x-moongate-' "$WORK/headers" | tr -d '\r'

step "Access log line (moongate's stderr)"
for _ in $(seq 40); do grep -q '"access"' "$WORK/moongate.log" && break; sleep 0.05; done
grep '"access"' "$WORK/moongate.log" | python3 -c '
import json, sys
for line in sys.stdin:
    print(json.dumps(json.loads(line), indent=2))'

echo
echo "local was down, so backup/qwen3-8b served the request: see x-moongate-route above."
