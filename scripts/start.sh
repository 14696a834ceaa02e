#!/usr/bin/env bash
# The first set-up command: installs what is missing (Debian 12), builds moongate, and starts it
# on a default config (examples/lmstudio-minimax.json5: LM Studio on 127.0.0.1:1234 as the default
# model; the hosted models of models.mode "merge" by name). Pass another config as the first
# argument, or set MOONGATE_CONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
config=${1:-${MOONGATE_CONFIG:-examples/lmstudio-minimax.json5}}
build/moongate check --config "$config"
echo "moongate: serving $config (Ctrl-C to stop)" >&2
exec build/moongate serve --config "$config"
