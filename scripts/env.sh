# shellcheck shell=bash disable=SC2034  # sourced; the variables are used by the scripts
# Sourced by the project's scripts: where the tools and the build cache live.
#
# Everything heavy (the Python tools, the Zig compiler, the TigerBeetle server,
# cargo's target directory) lives under one cache folder outside the checkout,
# so that a fresh clone on the same machine builds incrementally.

# Some CI runners start jobs without HOME (fatal under `set -u`, and cargo and pip
# need it too): take it from the user's passwd entry, else /tmp.
if [ -z "${HOME:-}" ]; then
  HOME="$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6 || true)"
  export HOME="${HOME:-/tmp}"
fi
BKP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BKP_CACHE="${BKP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bkp}"
BKP_TOOLS="$BKP_CACHE/tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$BKP_CACHE/target}"
export ZIG_PATH="$BKP_TOOLS/zig/zig"
export PATH="$BKP_TOOLS/bin:$PATH"
BKP_TB_VERSION="0.16.78"
BKP_TB_COMMIT="c3d9b09dc88e94dde9ac915c6e94a4c650332080"
