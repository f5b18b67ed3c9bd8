# Sluice controller and CLI image: `docker build -t ghcr.io/sluice-dev/sluice:0.1.0 .`
# (the Helm chart's default image). Build stage: a static musl binary without the live demo
# (`--no-default-features`: the controller does not link the in-process API server); runtime:
# distroless static, non-root, nothing else in the image.
FROM rust:1-bookworm AS build
RUN apt-get update -qq && apt-get install -y -qq musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Workspace members: cargo reads their manifests even when it builds only `sluice`.
COPY e2e ./e2e
COPY test-support ./test-support
COPY crds ./crds
RUN cargo build --release --locked --no-default-features --target x86_64-unknown-linux-musl \
        --bin sluice \
    && cp target/x86_64-unknown-linux-musl/release/sluice /sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /sluice /usr/local/bin/sluice
# 65532 = the distroless "nonroot" user; the chart's securityContext uses the same ids.
USER 65532:65532
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["controller"]
