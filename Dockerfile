# aarch64 + CUDA 13 image for DGX Spark (GB10, sm_121). libtorch comes from PyPI's torch 2.11.0
# wheel (its aarch64 build carries CUDA 13); the binary is built inside the image against it.
# The venv also holds the ComfyUI web frontend, workflow templates and node docs at the
# versions upstream ComfyUI pins and CLIP's BPE vocabulary (open-clip-torch, without its
# dependencies), which the server finds in /app/.venv.
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv curl ca-certificates build-essential pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:/app/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /app
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir torch==2.11.0 \
        comfyui-frontend-package==1.49.6 comfyui-workflow-templates==0.11.44 comfyui-embedded-docs==0.5.10 \
    && .venv/bin/pip install --no-cache-dir --no-deps open-clip-torch==3.3.0
COPY . .
RUN cargo build --release --bin videosdgx && cp target/release/videosdgx /usr/local/bin/

FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
# The FFmpeg libraries the binary links (Ubuntu 24.04's FFmpeg 6.1), and curl for the healthcheck.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 curl libavcodec60 libavformat60 libavutil58 libswscale7 libswresample4 libavfilter9 libavdevice60 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The binary's rpath points at /app/.venv's libtorch, so the venv comes along unchanged.
COPY --from=build /app/.venv /app/.venv
COPY --from=build /usr/local/bin/videosdgx /usr/local/bin/videosdgx
EXPOSE 8188
ENTRYPOINT ["videosdgx"]
CMD ["--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/app"]
