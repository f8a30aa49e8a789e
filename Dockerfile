# One image for the Ray head, the workers and the runner (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/fedopt
# CPU build of torch by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124
# (or another CUDA index) for GPU workers.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY fedopt ./fedopt
RUN pip install .
COPY topologies ./topologies
COPY experiments ./experiments
# `pip install .` puts fedopt in site-packages, away from topologies/: name the folder so
# registered plug-in topologies (`name: ring_of_cliques`) and `topologies/...` paths
# resolve as in a source checkout, from any working directory.
ENV FEDOPT_TOPOLOGIES=/opt/fedopt/topologies
# Token authentication is always on: RAY_AUTH_TOKEN comes from the env file at run time.
ENV RAY_AUTH_MODE=token
CMD ["fedopt", "--help"]
