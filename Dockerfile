# The Backfill image: Debian slim, the Backfill package (a static Swift runtime, so only libpq5
# and the C/C++ runtime come with it), a non-root user, and `backfill` as the entrypoint.
#
#   scripts/package-deb                                     # dist/backfill_0.1.0_<arch>.deb, on Debian 12
#   docker build -t registry.example.com/backfill:0.1.0 .   # the image the recipes in deploy/ run
#
# Build the package on Debian 12 (bookworm), the release this image is based on, so that the
# libraries it was linked against are the ones installed here. Keep one architecture in dist/.
FROM debian:bookworm-slim

ARG VERSION=0.1.0
COPY dist/backfill_${VERSION}_*.deb /tmp/
RUN apt-get update \
    && apt-get install -y --no-install-recommends /tmp/backfill_${VERSION}_*.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/backfill_*.deb \
    && useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin backfill \
    && backfill --version

USER 10001:10001
ENTRYPOINT ["backfill"]
CMD ["--help"]
