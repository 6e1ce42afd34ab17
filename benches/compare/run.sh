#!/usr/bin/env bash
# Runs the same workloads with CPython's multiprocessing and with multiproc, in one go, and
# writes benches/compare/results.md (the table) and benches/compare/plot.png (the plot).
#
#   bash benches/compare/run.sh            # full run, a few minutes
#   bash benches/compare/run.sh --quick    # a tenth of the iterations: for checking the scripts
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
here=benches/compare
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d "${TMPDIR:-/tmp}/multiproc-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== multiproc (cargo bench --bench compare)" >&2
cargo bench --quiet --bench compare -- "$@" >"$work/rust.json"
echo "== CPython $(python3 -c 'import platform; print(platform.python_version())')" >&2
python3 "$here/python.py" "$@" >"$work/python.json"

python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    venv="$target/compare-venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "== installing matplotlib into $venv (for the plot)" >&2
        python3 -m venv "$venv" && "$venv/bin/pip" install --quiet matplotlib || true
    fi
    [ -x "$venv/bin/python" ] && python="$venv/bin/python"
fi
"$python" "$here/report.py" "$work/rust.json" "$work/python.json" "$here"
