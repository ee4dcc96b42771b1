"""docker compose (deploy/compose): every variant renders with Compose v2 (`docker compose config`), the
prod overlay refuses to start without its credentials, and the rendered model has what `make up` needs."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    COMPOSE_DIR,
    COMPOSE_VARIANTS,
    PROD_ENV,
    REPO,
    SCHEMA_SERVICES,
    SERVICES,
    compose_command,
    env_file_for,
    render_compose,
    run,
)

Model = Callable[[str], dict[str, Any]]
INFRA = ("postgres", "redis", "rabbitmq", "kafka", "kafka-init", "etcd", "minio", "minio-init", "milvus",
         "jaeger", "prometheus")  # fmt: skip
# Long-running containers without a health check, and why.
NO_HEALTHCHECK = {
    "jaeger": "distroless image: nothing inside to probe with; nothing waits for it",
    "kafka-exporter": "scratch image; nothing waits for it",
}
ONE_SHOT = {"init-data", "kafka-init", "minio-init", *(f"{s}-migrate" for s in SCHEMA_SERVICES)}
# Ports that local services (or `make dev`) usually hold: the dev overlay must not publish on them.
COMMON_PORTS = {80, 443, 2379, 3000, 4317, 5432, 5672, 6379, 8000, 8001, 8002, 8003, 8004, 8005, 8006, 8080,
                8081, 8090, 9000, 9001, 9090, 9092, 15672, 16686, 19530, 50051}  # fmt: skip
# Development values (dev.env): none may appear in the rendered prod model.
DEV_VALUES = ("coca-dev", "Y29jYS1kZXYtc2VjcmV0cy1rZXktY2hhbmdlLW1lISE=")


@pytest.mark.parametrize("variant", list(COMPOSE_VARIANTS))
def test_compose_variant_renders_without_warnings(variant: str, tmp_path: Path):
    result = render_compose(variant, env_file_for(variant, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr
    assert {*SERVICES, *INFRA} <= set(result.model["services"])


def test_base_file_alone_refuses_to_render_without_credentials(tmp_path: Path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = [*compose_command(), "--env-file", str(empty), "-f", str(COMPOSE_DIR / "compose.yaml")]
    proc = run([*base, "config", "-q"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert "is not set" in proc.stderr


@pytest.mark.parametrize(
    "missing",
    [
        "ENVIRONMENT",
        "PUBLIC_URL",
        "INTERNAL_SECRET",
        "SECRETS_KEYS",
        "JWT_PRIVATE_KEY",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "RABBITMQ_PASSWORD",
        "MINIO_ROOT_PASSWORD",
    ],
)
def test_prod_refuses_to_start_without(missing: str, tmp_path: Path):
    values = {k: v for k, v in PROD_ENV.items() if k != missing}
    result = render_compose("prod", env_file_for("prod", tmp_path, values))
    assert result.returncode != 0, f"prod rendered without {missing}"
    assert missing in result.stderr, result.stderr
    assert "is not set" in result.stderr, result.stderr


def test_prod_holds_no_development_credentials(compose_model: Model):
    text = str(compose_model("prod"))
    for value in DEV_VALUES:
        assert value not in text, f"development value {value!r} in the prod model"
    for name in SERVICES:
        assert compose_model("prod")["services"][name]["environment"]["ENVIRONMENT"] == "prod"


def test_prod_publishes_only_nginx_on_80_and_443(compose_model: Model):
    services = compose_model("prod")["services"]
    published = {name: svc["ports"] for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"nginx"}
    assert sorted(int(p["target"]) for p in published["nginx"]) == [80, 443]
    nginx = services["nginx"]
    assert {v["target"] for v in nginx["volumes"]} >= {"/etc/nginx/nginx.conf", "/etc/nginx/certs"}
    assert all(
        nginx["depends_on"][s]["condition"] == "service_healthy" for s in ("gateway", "ws-gateway", "web")
    )
    gateway = services["gateway"]["environment"]
    assert gateway["TRUSTED_PROXY_HOPS"] == "1", "nginx adds one X-Forwarded-For hop"
    assert services["user"]["environment"]["JWT_PRIVATE_KEY"], "prod needs a persistent JWT signing key"


def test_dev_publishes_remapped_ports_on_localhost(compose_model: Model):
    services = compose_model("dev")["services"]
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host = int(port["published"])
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes on {port.get('host_ip')}"
            assert host not in COMMON_PORTS, f"{name} publishes {host}, a port local services use"
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
    assert {int(p["target"]) for p in services["gateway"]["ports"]} == {8080}
    assert {"postgres", "redis", "rabbitmq", "kafka", *SERVICES} <= {
        n for n, s in services.items() if s.get("ports")
    }


def test_containers_wait_for_healthy_or_finished_dependencies(compose_model: Model):
    services = compose_model("dev-gpu")["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            condition = cond["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {dep}: {condition}"
            )
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            else:
                assert dep in ONE_SHOT, f"{name} waits for {dep} to finish; it is not a one-shot step"
    for name, svc in services.items():
        if name in ONE_SHOT or name in NO_HEALTHCHECK:
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_nine_services_build_from_one_dockerfile_and_migrate_first(compose_model: Model):
    services = compose_model("dev")["services"]
    for name, (pkg, port, _) in SERVICES.items():
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/docker/service.Dockerfile"
        assert Path(svc["build"]["context"]) == REPO
        assert svc["build"]["args"]["SERVICE"] == pkg
        assert svc["environment"]["HTTP_PORT"] == str(port)
        assert svc["environment"]["HTTP_HOST"] == "0.0.0.0"
        assert "/readyz" in " ".join(svc["healthcheck"]["test"])
        assert str(port) in " ".join(svc["healthcheck"]["test"])
    for name in SCHEMA_SERVICES:
        step = services[f"{name}-migrate"]
        assert step["command"] == ["migrate"]
        assert step["image"] == services[name]["image"], f"{name}-migrate runs another image than {name}"
        assert step["restart"] == "no"
        assert (
            services[name]["depends_on"][f"{name}-migrate"]["condition"] == "service_completed_successfully"
        )


def test_services_reach_each_other_and_the_infrastructure_by_name(compose_model: Model):
    services = compose_model("dev")["services"]
    env = services["agent"]["environment"]
    for name, (pkg, port, _) in SERVICES.items():
        if name != "web":  # nothing calls the web UI's server
            assert env[f"{pkg.upper()}_SERVICE_ADDR"] == f"http://{name}:{port}", name
    assert env["MEMORY_GRPC_ADDR"] == "memory:50051"
    assert env["DATABASE_URL"].startswith("postgresql://coca:")
    assert env["DATABASE_URL"].endswith("@postgres:5432/coca")
    assert env["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["AMQP_URL"].endswith("@rabbitmq:5672/")
    assert env["REDIS_URL"].endswith("@redis:6379/0")
    memory = services["memory"]["environment"]
    assert memory["MILVUS_URI"] == "http://milvus:19530"
    assert memory["S3_ENDPOINT"] == "http://minio:9000"
    assert memory["GRPC_PORT"] == "50051"
    assert memory["GRPC_HOST"] == "0.0.0.0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"


def test_infrastructure_is_kafka_kraft_milvus_standalone_and_observability(compose_model: Model):
    services = compose_model("dev")["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in " ".join(services)
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from kafka-init only"
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16, "a KRaft cluster id is 16 bytes"
    assert services["rabbitmq"]["image"].endswith("-management")
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "minio:9000"
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == REPO / "deploy/observability/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == REPO / "deploy/observability/prometheus/rules"


def test_data_lives_in_infra_data_which_git_ignores(compose_model: Model):
    services = compose_model("dev")["services"]
    data = REPO / "infra" / "data"
    for name in ("postgres", "redis", "rabbitmq", "kafka", "etcd", "minio", "milvus", "prometheus"):
        binds = [Path(v["source"]) for v in services[name]["volumes"] if v["type"] == "bind"]
        assert any(b.is_relative_to(data) for b in binds), f"{name} keeps its data elsewhere: {binds}"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "infra/data/postgres/PG_VERSION"], cwd=REPO, check=False
    )
    assert ignored.returncode == 0, "infra/data/ is not git-ignored"


def test_gpu_profile_runs_vllm_and_points_the_agent_at_it(compose_model: Model):
    plain = compose_model("dev")["services"]
    assert "vllm" not in plain, "vLLM runs only with the gpu profile"
    assert plain["agent"]["environment"]["LLM_BASE_URL"] == "http://llm-standin:8090/v1"
    services = compose_model("dev-gpu")["services"]
    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["profiles"] == ["gpu"]
    for key in ("CUDA_VISIBLE_DEVICES", "VLLM_GPU_MEMORY_UTILIZATION", "VLLM_MAX_MODEL_LEN"):
        assert key in vllm["environment"], key
    args = " ".join(vllm["command"])
    assert "--enable-auto-tool-choice" in args
    assert "--tool-call-parser=hermes" in args
    assert "--served-model-name=qwen2.5-1.5b-instruct" in args
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])
    assert any(v["target"] == "/models" for v in vllm["volumes"])
    agent = services["agent"]
    assert agent["environment"]["LLM_BASE_URL"] == "http://vllm:8000/v1"
    assert agent["environment"]["LLM_MODEL"] == "qwen2.5-1.5b-instruct"
    assert agent["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_service_containers_run_with_least_privilege(compose_model: Model):
    services = compose_model("prod")["services"]
    for name in [*SERVICES, *(f"{s}-migrate" for s in SCHEMA_SERVICES), "llm-standin"]:
        svc = services[name]
        assert svc.get("read_only") is True, f"{name}: root filesystem is writable"
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name


def test_create_topics_script_creates_and_converges_each_topic(compose_model: Model, tmp_path: Path):
    """The topic script (kafka-init and the Kubernetes Job) against a stand-in for Kafka's CLI tools,
    which need a JVM and a broker: it must create each topic with its partitions and set retention."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh"):
        stub = bin_dir / tool
        stub.write_text(
            f'#!/bin/sh\necho "{tool} $*" >> {calls}\n'
            'case "$*" in *--describe*) echo "Topic: x	PartitionCount: 1	ReplicationFactor: 1";; esac\n'
        )
        stub.chmod(0o755)
    env = compose_model("dev")["services"]["kafka-init"]["environment"]
    proc = subprocess.run(
        ["sh", str(COMPOSE_DIR / "kafka" / "create-topics.sh")],
        env={"PATH": "/usr/bin:/bin", "KAFKA_BIN": str(bin_dir), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    log = calls.read_text()
    assert "--create --if-not-exists --topic agent.events --partitions 8 --replication-factor 1" in log
    assert "--alter --topic agent.events --partitions 8" in log, "a topic with fewer partitions is grown"
    assert "--entity-name agent.events --add-config retention.ms=604800000" in log
    assert "--entity-name agent.tasks --delete-config retention.ms" in log, "'-' keeps the broker default"
    assert "--entity-name audit.logs --add-config retention.ms=7776000000" in log
    # A managed cluster's TLS/SASL client settings reach every call.
    calls.unlink()
    secured = {**env, "KAFKA_CLIENT_CONFIG": "/etc/kafka/client.properties"}
    proc = subprocess.run(
        ["sh", str(COMPOSE_DIR / "kafka" / "create-topics.sh")],
        env={"PATH": "/usr/bin:/bin", "KAFKA_BIN": str(bin_dir), **secured},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = calls.read_text().splitlines()
    assert lines
    assert all("--command-config /etc/kafka/client.properties" in line for line in lines)
