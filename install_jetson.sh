#!/usr/bin/env bash
# Set-up of the device side on a Jetson (JetPack). Not written yet: the device-side issue fills it in
# (venv with --system-site-packages, onnxruntime(-gpu), pycuda, tegrastats/nvpmodel/jetson_clocks checks).
echo "install_jetson.sh: not written yet; on a Jetson, copy device/ and run 'python3 -m device backends'" >&2
exit 1
