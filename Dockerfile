# The kured image: Debian's slim Python with kured and its locked runtime dependencies in
# /opt/venv, byte-compiled at build time so it runs on a read-only root filesystem.
#   docker build -t ghcr.io/kured-py/kured:0.1.0 .
# tests/unit/test_image_layout.py runs the build stage's RUN lines without Docker and starts
# the result on a read-only mount, so keep each RUN line to plain shell on these paths.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels .
# requirements.lock pins the dev tools too; as constraints it pins only what kured needs.
RUN python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --no-compile \
      --constraint requirements.lock /wheels/kured-*.whl
# unchecked-hash: the .pyc files are used without looking at the sources' timestamps. No
# PYTHONOPTIMIZE (nor -o 2): -OO drops docstrings, and kuredctl's --help is made of them; its
# 2.3 MiB less RSS per daemon is not worth an incomplete --help (docs/lab.md, image facts).
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv

FROM ${PYTHON_IMAGE}
# nsenter (util-linux, Essential in Debian, so already in the slim image) runs the reboot
# command in the host's mount namespace. User 65532 is there for running kured as non-root,
# which only works without rebooting (see USER below).
# The standard library's bytecode: python:3.11-slim deletes every .pyc, so on a read-only root
# each start would compile the ~150 modules kured imports again (site-packages: pip, unused).
RUN command -v nsenter \
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash -x /site-packages/ \
      "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && groupadd --system --gid 65532 kured \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kured
COPY --from=build /opt/venv /opt/venv
# Go kured's manifests and Helm chart run /usr/bin/kured.
RUN ln -s /opt/venv/bin/kured /usr/bin/kured
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root, as Go kured's image: both reboot methods need root's capabilities (nsenter into PID 1's
# mount namespace with --reboot-method=command, signalling PID 1 with signal), and a non-root
# user gets none of them even in a privileged container. Go kured's chart and manifests set no
# runAsUser, so a non-root default would break swapping in this image. The capabilities are
# what to limit: privileged for command; only CAP_KILL for signal (deploy/helm/kured does so).
USER 0:0
ENTRYPOINT ["/opt/venv/bin/kured"]
