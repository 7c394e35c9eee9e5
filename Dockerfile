# One image for the operator, the storage node, the database instance and the workload:
#   tidemark operator run … | tidemark node run … | tidemark sql serve … | tidemark workload …
#
# The build never downloads anything: the wheels are built on the host first, the
# dependencies apart from Tidemark's own (a layer that changes only with them):
#   python -m pip wheel --wheel-dir dist/wheels/deps .
#   mkdir -p dist/wheels/app && mv dist/wheels/deps/tidemark-*.whl dist/wheels/app/
#   docker build -t tidemark:0.1.0 .
# BASE is any image with Python 3.11+ and its venv module; the default is pullable from
# Docker Hub. `tidemark dev kind up` builds with a Debian base made offline by debootstrap.
ARG BASE=python:3.11-slim-bookworm

# The dependencies' venv, made in a stage of its own so the wheels copied in never end up
# in a layer of the image (each node of a kind cluster imports every layer).
FROM ${BASE} AS deps
COPY dist/wheels/deps/ /wheels/
# kubernetes/aio is an asyncio client bundled with the kubernetes package (68 MB in 37.0.1) that
# nothing here imports; setuptools is needed only to install.
RUN python3 -m venv /opt/tidemark \
 && /opt/tidemark/bin/pip install --no-cache-dir --no-index /wheels/*.whl \
 && rm -rf /opt/tidemark/lib/python3*/site-packages/kubernetes/aio \
 && /opt/tidemark/bin/pip uninstall --yes --quiet setuptools

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/tidemark/bin:$PATH
COPY --from=deps /opt/tidemark /opt/tidemark
COPY dist/wheels/app/ /wheels/
RUN /opt/tidemark/bin/pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
 && rm -rf /wheels \
 && groupadd --gid 10001 tidemark \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp tidemark \
 && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 5432 7000 8080 9090
ENTRYPOINT ["tidemark"]
CMD ["--help"]
