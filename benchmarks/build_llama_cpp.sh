#!/usr/bin/env bash
# Build llama.cpp's reference tools (llama-bench, llama-quantize, llama-imatrix, llama-perplexity,
# llama-tokenize) from the llama-cpp-python 0.3.36 sdist into $LLAMA_CPP_DIR
# (default ~/.cache/tinyllm/llama.cpp), outside the repository. About 20 minutes on 2 cores.
set -euo pipefail
dir="${LLAMA_CPP_DIR:-$HOME/.cache/tinyllm/llama.cpp}"
if [ ! -f "$dir/CMakeLists.txt" ]; then
  tmp="$(mktemp -d)"
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp"
  mkdir -p "$(dirname "$dir")"
  mv "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp "$dir"
  rm -rf "$tmp"
fi
cd "$dir"
# -march=native, without AMX: some VMs advertise AMX tiles without enabling them, and ggml's
# AMX prefill path then dies with SIGILL (tileloadd); the AVX-512/AVX2 kernels are unchanged.
noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx"
cmake --build build --target llama-bench llama-quantize llama-imatrix llama-perplexity llama-tokenize
echo "built: $dir/build/bin"
