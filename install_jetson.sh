#!/usr/bin/env bash
# Set up the edgeshrink device side on a Jetson (JetPack 5 or later). Idempotent: run it again at any time.
#
#   ./install_jetson.sh [--venv DIR] [--dry-run]
#
# What it does:
#   1. a venv with --system-site-packages (so JetPack's TensorRT Python bindings are seen inside it);
#   2. numpy, pycuda, and onnxruntime-gpu when a wheel for this Python/JetPack is reachable (else onnxruntime, CPU);
#   3. checks for tegrastats, nvpmodel, jetson_clocks and trtexec, and prints versions.
# Afterwards drive it from the host with  --device 'ssh://USER@BOARD?python=DIR/bin/python3'.
set -euo pipefail

VENV="${HOME}/edgeshrink-venv"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install_jetson.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() {  # print, and run unless --dry-run
  echo "+ $*"
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}

PY=python3
command -v "$PY" >/dev/null || { echo "install_jetson.sh: python3 not found" >&2; exit 1; }
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' || { echo "install_jetson.sh: Python >= 3.8 needed" >&2; exit 1; }

L4T=""
if [ -r /etc/nv_tegra_release ]; then
  L4T="$(head -n1 /etc/nv_tegra_release)"
  echo "L4T: ${L4T}"
else
  echo "warning: /etc/nv_tegra_release not found: this does not look like a Jetson (continuing)" >&2
fi

if [ -x "${VENV}/bin/python3" ]; then
  echo "venv ${VENV} exists: reusing it"
else
  run "$PY" -m venv --system-site-packages "${VENV}"
fi
VPY="${VENV}/bin/python3"
run "$VPY" -m pip install --upgrade pip
run "$VPY" -m pip install "numpy<2"   # JetPack's TensorRT and OpenCV bindings are built against numpy 1.x
run "$VPY" -m pip install pycuda || echo "warning: pycuda did not build (needs CUDA's nvcc on PATH: export PATH=/usr/local/cuda/bin:\$PATH)" >&2
# onnxruntime-gpu: NVIDIA publishes Jetson wheels (Jetson Zoo / jp6 index); pip finds it only where an index has one.
if ! run "$VPY" -m pip install onnxruntime-gpu; then
  echo "warning: no onnxruntime-gpu wheel reachable for this JetPack; installing the CPU onnxruntime" >&2
  run "$VPY" -m pip install onnxruntime
fi

echo "--- tools"
for tool in tegrastats nvpmodel jetson_clocks; do
  if command -v "$tool" >/dev/null || [ -x "/usr/bin/$tool" ]; then echo "$tool: found"; else echo "$tool: MISSING" >&2; fi
done
if [ -x /usr/src/tensorrt/bin/trtexec ] || command -v trtexec >/dev/null; then echo "trtexec: found"; else echo "trtexec: MISSING" >&2; fi
if command -v nvpmodel >/dev/null; then nvpmodel -q 2>/dev/null | head -n 2 || true; fi

echo "--- versions"
if [ "$DRY" -eq 0 ]; then
  "$VPY" - <<'PY'
import importlib
for m in ("numpy", "tensorrt", "pycuda", "onnxruntime"):
    try:
        print(f"{m}: {importlib.import_module(m).__version__}")
    except Exception as e:  # noqa: BLE001
        print(f"{m}: not importable ({e})")
PY
else
  echo "(dry run: nothing installed)"
fi
echo "done. Copy the device side (host device pack --out-pyz edgeshrink-device.pyz) and run: ${VPY} edgeshrink-device.pyz backends"
