# osd: the storage control-plane daemon.
#   docker build -t osd .
#   openssl rand -hex 32 > osd.secret
#   docker run -p 9100:9100 -p 9110:9110 -v osd-data:/var/lib/osd \
#       -v "$PWD/osd.secret:/run/secrets/osd-auth:ro" osd
# It listens on all addresses, so it requires tokens signed with that secret
# (osd token issue --secret-file osd.secret --role admin --subject you).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OSD_GRPC_LISTEN=0.0.0.0:9100 \
    OSD_REST_LISTEN=0.0.0.0:9110 \
    OSD_DATA_DIR=/var/lib/osd \
    OSD_AUTH_SECRET_FILE=/run/secrets/osd-auth

WORKDIR /src
COPY pyproject.toml README.md ./
COPY osd ./osd
COPY gateway ./gateway
# The local driver and the CSI node plugin mount, format and grow
# filesystems and set up loop devices with the host's tools.
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux mount e2fsprogs xfsprogs btrfs-progs \
    && rm -rf /var/lib/apt/lists/*
RUN pip install . && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/osd --create-home osd

USER osd
WORKDIR /var/lib/osd
VOLUME ["/var/lib/osd"]
# 9100: gRPC; 9110: REST gateway.
EXPOSE 9100 9110
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["osd", "health", "--endpoint", "127.0.0.1:9100"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["osd"]
CMD ["serve"]
