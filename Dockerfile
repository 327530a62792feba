# The image for the in-cluster parts (controller and receiver): `docker build -t anklet:0.1.0 .`
# The Macs run `anklet agent` natively (it drives the `anka` CLI), never this image.

# Build stage: a virtualenv with the package and its dependencies, so the final stage copies one
# directory and carries no compiler, pip cache or source tree.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/anklet
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY anklet ./anklet
COPY controller ./controller
COPY host_agent ./host_agent
COPY plugins ./plugins
RUN /opt/anklet/bin/pip install -c constraints.txt . \
    && /opt/anklet/bin/anklet --version

# Runtime stage: the virtualenv, a non-root user, nothing else. The manifests run it with a
# read-only root filesystem (only /tmp is writable) and the same uid (runAsUser: 10001).
FROM python:3.11-slim
RUN groupadd --system --gid 10001 anklet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin anklet
COPY --from=build /opt/anklet /opt/anklet
ENV PATH=/opt/anklet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["anklet"]
CMD ["controller"]
