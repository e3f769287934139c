#!/usr/bin/env bash
# Build the frozen application into dist/fieldmark/ with PyInstaller (packaging/fieldmark.spec):
#   dist/fieldmark/fieldmark-gui     the desktop application
#   dist/fieldmark/fieldmark         the command line tool
#   dist/fieldmark/fieldmark.desktop + fieldmark.png (256 px, rendered from resources/icons/fieldmark.svg)
#
#   bash packaging/build.sh [--clean]          CPU bundle (on-demand CUDA libraries left out)
#   FIELDMARK_BUNDLE_CUDA=1 bash packaging/build.sh   keep every CUDA library of the torch wheel
#
# Installs PyInstaller into the project's virtual environment when it is missing (FIELDMARK_VENV overrides the
# environment, default .venv). Prints the bundle's size and the build time. Then: bash packaging/smoke_test.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${FIELDMARK_VENV:-$root/.venv}"
py="$venv/bin/python"
clean=()
for arg in "$@"; do
    case "$arg" in
        --clean) clean=(--clean) ;;
        *) echo "build.sh: unknown option $arg (use --clean)" >&2; exit 2 ;;
    esac
done
if [ ! -x "$py" ]; then
    echo "build.sh: no virtual environment at $venv: run ./fm once (it creates it) or set FIELDMARK_VENV" >&2
    exit 1
fi
if ! "$py" -c "import PyInstaller" 2>/dev/null; then
    echo "build.sh: installing PyInstaller into $venv" >&2
    "$py" -m pip install --quiet "pyinstaller>=6.11"
fi
cd "$root"
start=$(date +%s)
svg="resources/icons/fieldmark.svg"
png="build/icon/fieldmark.png"
if [ ! -f "$svg" ]; then
    echo "build.sh: $svg is missing (the application icon)" >&2
    exit 1
fi
QT_QPA_PLATFORM=offscreen "$py" packaging/render_icon.py "$svg" "$png" 256 >/dev/null
echo "build.sh: PyInstaller $("$py" -c 'import PyInstaller; print(PyInstaller.__version__)'), torch" \
     "$("$py" -c 'import torch; print(torch.__version__)'), bundle: $([ "${FIELDMARK_BUNDLE_CUDA:-0}" = 1 ] && echo CUDA || echo CPU)" >&2
"$py" -m PyInstaller --noconfirm "${clean[@]}" --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/fieldmark.spec
cp packaging/fieldmark.desktop "$png" dist/fieldmark/
end=$(date +%s)
size=$(du -sh dist/fieldmark | cut -f1)
files=$(find dist/fieldmark -type f | wc -l)
echo "built dist/fieldmark in $((end - start)) s: $size, $files files"
echo "largest parts:"
du -sh dist/fieldmark/_internal/* 2>/dev/null | sort -h | tail -8 | sed 's/^/  /'
echo "run: dist/fieldmark/fieldmark-gui [DATA_OR_RUN]; check: bash packaging/smoke_test.sh"
