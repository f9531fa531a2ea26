#!/bin/sh
# Stands in for `cargo` in the self-update tests (hecate/tests/install.rs puts it first on PATH as
# `cargo`): "builds" the checkout by copying its `fake-hecate` script to target/release/hecate,
# so the tests exercise scripts/self-update.sh without a real four-minute release build.
# A checkout holding a file BUILD_FAILS fails to build, as a broken commit would.
set -eu
[ "${1:-}" = build ] || { echo "fake cargo: only 'build' is supported, got: $*" >&2; exit 2; }
if [ -e BUILD_FAILS ]; then
  echo "error: could not compile \`hecate\` (fake cargo: BUILD_FAILS is present)" >&2
  exit 101
fi
mkdir -p target/release
cp fake-hecate target/release/hecate
chmod 0755 target/release/hecate
