# One image for the operator, the storage node and the workload:
#   tidemark operator run ... | tidemark node run ... | tidemark workload ...
# Build: docker build -t tidemark:dev .
FROM python:3.12-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MPLCONFIGDIR=/tmp
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && groupadd --gid 10001 tidemark \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp tidemark \
 && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 7000 8080 9090
ENTRYPOINT ["tidemark"]
CMD ["--help"]
