# cellblock: one image for the API (`cellblock serve`), the workers (`cellblock
# worker`) and Redis (Debian's redis-server), see docker-compose.yml.
#
#   docker build -t cellblock .                                  # python:3.11-slim-bookworm
#   docker build --build-arg BASE_IMAGE=cellblock-base:bookworm . # offline: docker/build-base-image
#   docker build --build-arg TOOLCHAINS= .                        # no judged toolchains (small)
#
# The base must be Debian bookworm (or a derivative) with python3 >= 3.11 and
# python3 -m venv working: the official python:3.11-slim-bookworm, or a bare
# bookworm with python3 + python3-venv.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Toolchains of the judged languages (profiles/languages/*.toml), as in
# scripts/install; cells see the image's /usr, so what is here is what they run.
ARG TOOLCHAINS="gcc g++ libc6-dev default-jdk-headless nodejs golang-go rustc"
# Extras of the cellblock package to install (pyproject.toml).
ARG EXTRAS=""

# libseccomp2: the cells' filters (pyseccomp); util-linux: setpriv, which the
# entrypoint drops root with; tar: compiled artifacts out of compile cells;
# redis-server: the compose file's redis service and `cellblock serve`'s
# embedded one; gcc, libc6-dev and musl-tools: cellblock's own C part (the cell's init,
# sandbox/init.c, linked against musl: cellblock/toolchain.py).
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libseccomp2 util-linux procps iproute2 tar redis-server ca-certificates gcc libc6-dev musl-tools \
      ${TOOLCHAINS}; \
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; \
    fi; \
    rm -rf /var/lib/apt/lists/*

# Workers run as this user (see docker/entrypoint): never root in a cell's
# ancestry. uid/gid 1000 unless told otherwise.
ARG CELLBLOCK_UID=1000
RUN groupadd --gid ${CELLBLOCK_UID} cellblock \
 && useradd --uid ${CELLBLOCK_UID} --gid cellblock --create-home --shell /bin/sh cellblock

# pip checks TLS against the system's CA store (as apt does), not its own bundle,
# so a CA the base image trusts (docker/build-base-image) is honoured too.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV CELLBLOCK_VENV=/opt/cellblock/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv ${CELLBLOCK_VENV}

# Dependencies first (a layer that survives source edits), then cellblock itself.
COPY pyproject.toml README.md /src/
# (no heredoc: the classic builder, which docker-compose 1.x uses, has none)
RUN cd /src && ${CELLBLOCK_VENV}/bin/python -c 'import os, tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e.strip() for e in os.environ.get("EXTRAS", "").split(",") if e.strip()]; \
deps = p.get("dependencies", []) + [d for e in extras for d in p.get("optional-dependencies", {}).get(e, [])]; \
print("\n".join(deps))' > /tmp/requirements.txt
RUN ${CELLBLOCK_VENV}/bin/pip install -r /tmp/requirements.txt
COPY . /src
RUN set -eux; \
    spec=/src; [ -z "${EXTRAS}" ] || spec="/src[${EXTRAS}]"; \
    ${CELLBLOCK_VENV}/bin/pip install "$spec"; \
    ln -s ${CELLBLOCK_VENV}/bin/cellblock /usr/local/bin/cellblock; \
    install -m 0755 /src/docker/entrypoint /usr/local/bin/cellblock-entrypoint; \
    rm -rf /src /tmp/requirements.txt; \
    chmod -R a+rX ${CELLBLOCK_VENV}; \
    cellblock --help >/dev/null

WORKDIR /home/cellblock
ENTRYPOINT ["cellblock-entrypoint"]
CMD ["cellblock", "doctor"]
