# Coca AI — developer entry points. `make dev` runs the suite; `make test` passes the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PROTO_OUT := libs/coca-protos/src
PYTEST_ARGS ?=

.PHONY: help bootstrap sync dev test lint typecheck fmt protos protos-check docs docs-check ci clean \
  up down logs images deploy-tools deploy-check bench

# docker compose (`make up`): PROFILE=dev|prod, GPU=1 adds vLLM; SERVICE=<name> for `make logs`
PROFILE ?= dev
GPU ?=
SERVICE ?=
TAG ?= dev
COMPOSE_ENV_FILE = $(if $(filter prod,$(PROFILE)),deploy/compose/.env,deploy/compose/dev.env)
COMPOSE = docker compose --env-file $(COMPOSE_ENV_FILE) -f deploy/compose/compose.yaml \
  -f deploy/compose/compose.$(PROFILE).yaml $(if $(GPU),--profile gpu -f deploy/compose/compose.gpu.yaml)
SERVICE_DIRS := gateway ws_gateway user agent channel memory billing plugin web
# `make bench SCENARIO=gateway` (or a comma-separated list); all scenarios by default
SCENARIO ?= all

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

bootstrap:  ## install uv and the Debian packages the suite needs (when run as root)
	@bash scripts/bootstrap.sh $(UV_VERSION)

sync: bootstrap  ## install the locked environment (all packages + dev tools)
	@$(UV) sync --frozen --all-packages

dev: sync  ## run everything on this machine: infrastructure, LLM stand-in, nine services
	@$(UV) run --frozen python -m coca_platform.devstack

test: sync deploy-tools  ## run the whole test suite against real infrastructure
	@$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: sync  ## formatting, lint rules, import contracts
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen lint-imports

typecheck: sync  ## mypy --strict over the platform, the stand-in and every service
	@$(UV) run --frozen mypy

fmt: sync  ## format and fix what can be fixed automatically
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .

protos: sync  ## regenerate Python code from protos/
	@$(UV) run --frozen python -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) \
	  --grpc_python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) $$(find protos -name '*.proto' | sort)

protos-check: protos  ## fail if the committed generated code is stale
	@git diff --exit-code -- $(PROTO_OUT) || { echo "generated code is stale: run 'make protos' and commit"; exit 1; }

docs: sync  ## regenerate docs/configuration.md from the services' settings
	@$(UV) run --frozen python scripts/config_reference.py

docs-check: sync  ## fail if docs/configuration.md is stale
	@$(UV) run --frozen python scripts/config_reference.py --check

ci: lint typecheck protos-check docs-check test  ## what CI runs (.ci/run)

clean:  ## remove local data and caches (not the database)
	rm -rf .data .pytest_cache .ruff_cache .mypy_cache test-artifacts

up:  ## docker compose: build and start everything (PROFILE=dev|prod, GPU=1 adds vLLM)
	@test "$(PROFILE)" != prod || test -f deploy/compose/.env \
	  || { echo "make up PROFILE=prod: copy deploy/compose/.env.example to deploy/compose/.env and fill it in"; exit 1; }
	@mkdir -p infra/data
	@$(COMPOSE) up -d --build
	@echo "starting: 'make logs' to follow; dev URLs: web http://localhost:13000, API http://localhost:18080"

down:  ## docker compose: stop and remove the containers (data stays in infra/data/)
	@$(COMPOSE) down --remove-orphans

logs:  ## docker compose: follow the logs (SERVICE=agent for one service)
	@$(COMPOSE) logs -f --tail=200 $(SERVICE)

images:  ## build the nine service images and the LLM stand-in as coca/<service>:$(TAG)
	@for s in $(SERVICE_DIRS); do \
	  docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=$$s -t coca/$$s:$(TAG) . || exit 1; done
	@docker build -f deploy/docker/service.Dockerfile --target llm-standin -t coca/llm-standin:$(TAG) .

deploy-tools:  ## install the offline deployment checkers (promtool, nginx, Compose v2, kubectl, kubernetes-validate)
	@bash scripts/install-deploy-tools.sh

deploy-check: sync deploy-tools  ## check compose, Kubernetes, Prometheus, nginx and the image recipe, offline
	@$(UV) run --frozen pytest tests/deploy $(PYTEST_ARGS)

bench: sync deploy-tools  ## benchmarks of the hot paths against their anchors (SCENARIO=gateway,sse,fanout,agent_turn,login)
	@$(UV) run --frozen python -m bench --scenario $(SCENARIO) --write-docs
