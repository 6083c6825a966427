# aarch64 + CUDA 13 image for DGX Spark. libtorch comes from PyPI's torch wheel (CUDA 13 build for
# aarch64); the binary is built inside the image against it.
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv curl ca-certificates build-essential pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:/app/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /app
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir torch==2.11.0
COPY . .
RUN cargo build --release && cp target/release/videosdgx /usr/local/bin/

FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 curl libavcodec60 libavformat60 libswscale7 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# The binary's rpath points at /app/.venv's libtorch, so the venv comes along unchanged.
COPY --from=build /app/.venv /app/.venv
COPY --from=build /usr/local/bin/videosdgx /usr/local/bin/videosdgx
EXPOSE 8188
ENTRYPOINT ["videosdgx"]
CMD ["--listen", "0.0.0.0", "--port", "8188", "--base-directory", "/app"]
