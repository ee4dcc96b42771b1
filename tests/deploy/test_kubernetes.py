"""Kubernetes (deploy/k8s): every overlay renders with `kubectl kustomize` and validates against the
Kubernetes schemas (kubernetes-validate, strict); the rendered objects have what production needs."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import K8S, KUBERNETES_VERSION, SCHEMA_SERVICES, SERVICES, find_tool, kustomize, objects, run

Docs = Callable[[str], list[dict[str, Any]]]
OVERLAYS = ("dev", "prod")
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "SECRETS_KEYS", "ACCESS_KEY", "DATABASE_URL",
                "REDIS_URL", "AMQP_URL")  # fmt: skip
# The calls of the architecture brief, as (caller, callee, port). Nothing else may connect.
BRIEF_CALLS = {
    *(("gateway", name, port) for name, (_, port, _) in SERVICES.items() if name not in ("gateway", "web")),
    ("ws-gateway", "user", 8001),
    ("agent", "memory", 8004),
    ("agent", "memory", 50051),
    ("agent", "billing", 8005),
    ("agent", "plugin", 8006),
}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_against_kubernetes_schemas(overlay: str, tmp_path: Path):
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(kustomize(overlay))
    validate = find_tool("kubernetes-validate")
    proc = run([validate, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(rendered)])
    problems = [
        line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("ERROR", "WARN", "FATAL")
    ]
    assert proc.returncode == 0, "\n".join(problems) or proc.stderr[-3000:]
    assert not problems, "\n".join(problems)


def test_each_service_has_one_file_with_its_objects():
    for name in SERVICES:
        path = K8S / "base" / f"{name}.yaml"
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(path.read_text()) if d)
        assert kinds == sorted(
            (kind, name)
            for kind in (
                "ServiceAccount",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "HorizontalPodAutoscaler",
            )
        ), f"{path.name}: {kinds}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_probed_on_healthz_and_readyz(overlay: str, manifests: Docs):
    deployments = objects(manifests(overlay), "Deployment")
    for name, (_, port, _) in SERVICES.items():
        c = container(deployments[name])
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {p["name"]: p["containerPort"] for p in c["ports"]}["http"] == port
        if name == "memory":
            assert c["livenessProbe"]["grpc"]["port"] == 50051, "memory: gRPC health for liveness"
            assert c["startupProbe"]["grpc"]["port"] == 50051
        else:
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_coca_pods_run_non_root_read_only_without_capabilities(overlay: str, manifests: Docs):
    docs = manifests(overlay)
    pods = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] in SERVICES]
    pods += [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "migration"
    ]
    assert len(pods) == len(SERVICES) + len(SCHEMA_SERVICES) + 1  # + the Kafka topics job
    for obj in pods:
        spec = obj["spec"]["template"]["spec"]
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"], name
            assert c["resources"]["limits"], name


def test_prod_commits_no_secret_and_reads_credentials_from_the_secret(manifests: Docs):
    docs = manifests("prod")
    assert not [d for d in docs if d["kind"] == "Secret"], "the prod overlay must not carry a Secret"
    for obj in docs:
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if any(word in env["name"] for word in SECRET_WORDS):
                    assert "value" not in env, f"{obj['metadata']['name']}: {env['name']} is a literal"
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "coca-secrets", env
    config = objects(docs, "ConfigMap")["coca-config"]["data"]
    assert not [k for k in config if any(word in k for word in SECRET_WORDS)], "secrets in the ConfigMap"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_disruption_budget_and_an_autoscaler(overlay: str, manifests: Docs):
    docs = manifests(overlay)
    pdbs, hpas = objects(docs, "PodDisruptionBudget"), objects(docs, "HorizontalPodAutoscaler")
    for name in SERVICES:
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        hpa = hpas[name]["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["maxReplicas"] > hpa["minReplicas"]
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_migration_job_per_service_with_a_schema(overlay: str, manifests: Docs):
    docs = manifests(overlay)
    jobs, deployments = objects(docs, "Job"), objects(docs, "Deployment")
    for name in SCHEMA_SERVICES:
        job = container(jobs[f"{name}-migrate"])
        assert job["args"] == ["migrate"]
        assert job["image"] == container(deployments[name])["image"], f"{name}: the job runs another image"
        names = {e["name"] for e in job["env"]}
        assert "DATABASE_URL" in names, name
    assert not {f"{n}-migrate" for n in SERVICES if n not in SCHEMA_SERVICES} & set(jobs)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] != "In" or labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def allowed_calls(docs: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """(caller, callee, port) between Coca pods that both an egress and an ingress policy allow."""
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]

    def permitted(direction: str, owner: str, peer: str, port: int) -> bool:
        key, peer_key = ("egress", "to") if direction == "egress" else ("ingress", "from")
        for spec in policies:
            if not _matches(spec["podSelector"], pods[owner]):
                continue
            for rule in spec.get(key, []):
                peers = rule.get(peer_key)
                ports = [p["port"] for p in rule.get("ports", [])]
                if ports and port not in ports:
                    continue
                if peers is None:
                    return True
                for p in peers:
                    if (
                        "podSelector" in p
                        and "namespaceSelector" not in p
                        and _matches(p["podSelector"], pods[peer])
                    ):
                        return True
        return False

    ports = {
        name: {c["containerPort"] for c in d["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
        for name, d in ((d["metadata"]["name"], d) for d in docs if d["kind"] == "Deployment")
    }
    calls = set()
    for caller in SERVICES:
        for callee, callee_ports in ports.items():
            for port in callee_ports:
                if (
                    caller != callee
                    and permitted("egress", caller, callee, port)
                    and permitted("ingress", callee, caller, port)
                ):
                    calls.add((caller, callee, port))
    return calls


def test_network_policies_deny_by_default_and_allow_only_the_brief_calls(manifests: Docs):
    docs = manifests("prod")
    deny = objects(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    calls = allowed_calls(docs)
    assert calls == {*BRIEF_CALLS, ("agent", "vllm", 8000)}


def test_dev_network_policies_let_the_agent_reach_the_llm_standin(manifests: Docs):
    calls = allowed_calls(manifests("dev"))
    assert ("agent", "llm-standin", 8090) in calls
    assert calls >= BRIEF_CALLS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_api_websocket_and_ui_with_streaming_settings(overlay: str, manifests: Docs):
    ingresses = objects(manifests(overlay), "Ingress")
    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for ing in ingresses.values()
        for rule in ing["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes == {"/v1": "gateway", "/.well-known": "gateway", "/ws": "ws-gateway", "/": "web"}
    api = ingresses["coca-api"]["metadata"]["annotations"]
    assert api["nginx.ingress.kubernetes.io/proxy-buffering"] == "off", "SSE must not be buffered"
    for name in ("coca-api", "coca-ws"):
        notes = ingresses[name]["metadata"]["annotations"]
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600, name
        assert notes["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1", name
    if overlay == "prod":
        for ing in ingresses.values():
            assert ing["spec"]["tls"][0]["secretName"] == "coca-tls"


def test_prod_runs_vllm_on_a_gpu_node_and_the_agent_uses_it(manifests: Docs):
    docs = manifests("prod")
    vllm = objects(docs, "Deployment")["vllm"]
    spec = vllm["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"].startswith("vllm/vllm-openai:")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "persistentVolumeClaim" in volumes[mounts["/models"]]
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900, "weights need minutes to load"
    assert "--enable-auto-tool-choice" in c["args"]
    config = objects(docs, "ConfigMap")["coca-config"]["data"]
    service = objects(docs, "Service")["vllm"]["spec"]["ports"][0]
    assert config["LLM_BASE_URL"] == f"http://vllm:{service['port']}/v1"
    assert "--served-model-name=$(LLM_MODEL)" in c["args"]
    assert config["LLM_MODEL"] == "qwen2.5-1.5b-instruct"


def test_dev_runs_single_instance_infrastructure_in_the_namespace(manifests: Docs):
    docs = manifests("dev")
    stateful = objects(docs, "StatefulSet")
    assert set(stateful) == {"postgres", "redis", "rabbitmq", "kafka", "minio", "etcd", "milvus"}
    assert all(s["spec"]["replicas"] == 1 for s in stateful.values())
    kafka = {
        e["name"]: e.get("value")
        for e in stateful["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16, "a KRaft cluster id is 16 bytes"
    assert all(d["spec"]["replicas"] == 1 for n, d in objects(docs, "Deployment").items() if n in SERVICES)
    config = objects(docs, "ConfigMap")["coca-config"]["data"]
    assert config["ENVIRONMENT"] == "local"
    assert config["LLM_BASE_URL"] == "http://llm-standin:8090/v1"
    for key, service in (("KAFKA_BOOTSTRAP", "kafka"), ("MILVUS_URI", "milvus"), ("S3_ENDPOINT", "minio")):
        assert service in config[key], key
        assert service in objects(docs, "Service"), key
    secrets = {s["metadata"]["name"].rsplit("-", 1)[0] for s in docs if s["kind"] == "Secret"}
    assert secrets == {"coca-infra", "coca-secrets"}


def test_prod_points_at_managed_infrastructure(manifests: Docs):
    docs = manifests("prod")
    assert not objects(docs, "StatefulSet"), "production infrastructure is managed or operator-run"
    config = objects(docs, "ConfigMap")["coca-config"]["data"]
    assert config["ENVIRONMENT"] == "prod"
    for key in ("KAFKA_BOOTSTRAP", "S3_ENDPOINT", "MILVUS_URI", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert ".svc" in config[key], f"{key} still names an in-namespace service: {config[key]}"
    topics = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("kafka-topics")
    )
    assert topics["data"]["REPLICATION_FACTOR"] == "3"
    namespace = objects(docs, "Namespace")["coca"]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/audit"] == "restricted"


def test_service_pods_are_annotated_for_prometheus(manifests: Docs):
    deployments = objects(manifests("prod"), "Deployment")
    for name, (_, port, _) in SERVICES.items():
        notes = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(port)
        assert notes["prometheus.io/path"] == "/metrics"
