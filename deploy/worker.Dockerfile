# A worker image recipe: your app's code and dependencies, and `conveyor worker` to run it.
# Copy this next to your project and adapt the two marked lines.
#
#   docker build -f worker.Dockerfile -t myapp-worker .
#   docker run -e CONVEYOR_URL=tcp://conveyor:7419 myapp-worker
#
# Settings: CONVEYOR_URL, and CONVEYOR_WORKER_* for every `conveyor worker` option
# (CONVEYOR_WORKER_CONCURRENCY, CONVEYOR_WORKER_QUEUES="critical default", ...).

FROM python:3.12-slim
RUN useradd --system --create-home --uid 10002 worker
WORKDIR /app
COPY requirements.txt ./
# requirements.txt lists conveyor-jobs and whatever your jobs need
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
USER worker
ENV PYTHONUNBUFFERED=1 \
    CONVEYOR_WORKER_LOG_FORMAT=json \
    CONVEYOR_WORKER_METRICS_BIND=0.0.0.0:9191
EXPOSE 9191
# TERM: running jobs get --grace seconds (default 25) to finish; give the container more
STOPSIGNAL SIGTERM
ENTRYPOINT ["conveyor", "worker"]
# your app: package.module:attribute
CMD ["myapp.jobs:app"]
