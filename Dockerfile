# Kiln's container image: a build stage and a runtime stage holding only the binaries, the
# shared libraries they load, and the example models.
#
#   docker build -t kiln .                                      # CPU, Debian bookworm
#   docker build -t kiln:gpu \
#       --build-arg BUILD_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04 \
#       --build-arg RUNTIME_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 .
#   docker run --rm -p 8001:8001 -p 8002:8002 --shm-size=1g kiln
#
# The build stage runs what CI runs on Debian (scripts/deps.sh, make); the runtime stage
# installs exactly the packages scripts/runtime-packages.sh finds for the binaries (the CUDA
# runtime, cuBLAS and cuDNN come with the GPU base image).
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY . .
RUN apt-get update \
 && scripts/deps.sh --build \
 && make -j"$(nproc)" build/default/kiln-server build/default/kiln models \
 && scripts/runtime-packages.sh build/default/kiln-server build/default/kiln > /runtime-packages \
 && mkdir -p /out/models && cp -rL build/default/models/. /out/models/

FROM ${RUNTIME_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && groupadd --system --gid 10001 kiln \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kiln
COPY --from=build /src/build/default/kiln-server /src/build/default/kiln /usr/local/bin/
COPY --from=build /out/models /opt/kiln/models
USER 10001:10001
EXPOSE 8001 8002 8003
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/kiln", "--url", "127.0.0.1:8001", "--timeout", "2000", "health"]
ENTRYPOINT ["/usr/local/bin/kiln-server"]
CMD ["--model-repository=/opt/kiln/models", "--health-address=0.0.0.0:8003"]
