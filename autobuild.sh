#!/usr/bin/env bash
# Builds the release binaries into ./bin, or runs the whole test suite.
#
#   ./autobuild.sh          build bin/ChatServer, bin/ChatClient, bin/ConsistentHash
#   ./autobuild.sh test     build, then run every test (unit, integration, doc)
set -euo pipefail
cd "$(dirname "$0")"

BINS=(ChatServer ChatClient ConsistentHash)

build() {
    cargo build --release --locked --bins
    mkdir -p bin
    for b in "${BINS[@]}"; do
        if [ -f "target/release/$b" ]; then
            cp -f "target/release/$b" bin/
        fi
    done
    echo "built: $(cd bin && ls | tr '\n' ' ')"
}

run_tests() {
    # The suite opens a thousand sockets per side in one test.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # Release profile: the same build as ./bin, so CI compiles the dependencies once.
    cargo test --release --locked --all-targets
    cargo test --release --locked --doc
}

case "${1:-build}" in
    build) build ;;
    test) build && run_tests ;;
    *) echo "usage: $0 [test]" >&2; exit 2 ;;
esac
