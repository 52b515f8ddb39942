# llm-carbon-exporter container image.
#   docker build -t llm-carbon-exporter:0.1.0 .
#   docker run --rm -p 29877:29877 llm-carbon-exporter:0.1.0 serve --prometheus-url http://prometheus:9090
# The tag should match exporter/__init__.py's __version__ (the kustomize base uses it).

# Build stage: install the package and its dependencies into a virtualenv.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
# exporter/docs/*.md link here: served at /methodology and /troubleshooting, printed by `docs`.
COPY docs/configuration.md docs/methodology.md docs/metrics.md docs/troubleshooting.md ./docs/
COPY exporter ./exporter
# pip compiles the bytecode here, once: at run time the root filesystem is read-only.
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes --no-cache-dir pip

# Runtime stage: the virtualenv only, no build context, no compilers, no pip cache.
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="llm-carbon-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the energy and carbon cost of serving LLMs (vLLM + DCGM), per model." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /opt/venv /opt/venv
# Numeric, so the kubelet can verify runAsNonRoot; the manifests use the same 65532.
USER 65532:65532
EXPOSE 29877
ENTRYPOINT ["llm-carbon-exporter"]
CMD ["serve"]
