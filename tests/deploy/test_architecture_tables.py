"""The deployment matches the architecture doc's tables: replicas per service, requests and limits
(the docs/deploy.md table), and the Kafka topics with their partitions and retention, compared with
the code's own source of truth (coca_platform.kafka.TOPICS, coca_platform.amqp.TOPOLOGY) as well."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from coca_platform.amqp import TOPOLOGY
from coca_platform.kafka import TOPICS

from .conftest import (
    BRIEF_TOPICS,
    COMPOSE_DIR,
    K8S,
    REPO,
    SERVICES,
    Resources,
    objects,
    parse_topics,
)

Docs = Callable[[str], list[dict[str, Any]]]
Model = Callable[[str], dict[str, Any]]
# Compose writes memory limits in its own units; the table uses Kubernetes quantities.
MEBI = {"Mi": 1024**2, "Gi": 1024**3}


def bytes_of(quantity: str) -> int:
    return int(quantity[:-2]) * MEBI[quantity[-2:]]


def cores_of(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_docs_table_covers_every_service_with_the_brief_replicas(docs_resources: dict[str, Resources]):
    assert set(docs_resources) == set(SERVICES)
    for name, (_, _, replicas) in SERVICES.items():
        row = docs_resources[name]
        assert row.replicas == replicas, (
            f"docs/deploy.md: {name} has {row.replicas} replicas, the brief {replicas}"
        )
        assert row.max_replicas > row.replicas, name
        assert cores_of(row.cpu_request) <= cores_of(row.cpu_limit), name
        assert bytes_of(row.memory_request) <= bytes_of(row.memory_limit), name


def test_prod_replicas_match_the_architecture_doc(manifests: Docs):
    docs = manifests("prod")
    deployments, hpas = objects(docs, "Deployment"), objects(docs, "HorizontalPodAutoscaler")
    for name, (_, _, replicas) in SERVICES.items():
        assert deployments[name]["spec"]["replicas"] == replicas, name
        assert hpas[name]["spec"]["minReplicas"] == replicas, (
            f"{name}: the autoscaler would go below the table"
        )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_resources_match_the_docs_table(overlay: str, manifests: Docs, docs_resources: dict[str, Resources]):
    docs = manifests(overlay)
    deployments, hpas = objects(docs, "Deployment"), objects(docs, "HorizontalPodAutoscaler")
    for name, row in docs_resources.items():
        resources = deployments[name]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources == {
            "requests": {"cpu": row.cpu_request, "memory": row.memory_request},
            "limits": {"cpu": row.cpu_limit, "memory": row.memory_limit},
        }, name
        assert hpas[name]["spec"]["maxReplicas"] == row.max_replicas, name


def test_compose_prod_limits_match_the_docs_table(compose_model: Model, docs_resources: dict[str, Resources]):
    services = compose_model("prod")["services"]
    for name, row in docs_resources.items():
        limits = services[name]["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) == cores_of(row.cpu_limit), name
        assert int(limits["memory"]) == bytes_of(row.memory_limit), name


def test_the_code_topics_are_the_brief_topics():
    assert TOPICS == BRIEF_TOPICS


def test_compose_creates_the_brief_topics(compose_model: Model):
    env = compose_model("dev")["services"]["kafka-init"]["environment"]
    assert parse_topics(env["TOPICS"]) == BRIEF_TOPICS


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_kubernetes_creates_the_brief_topics(overlay: str, manifests: Docs):
    docs = manifests(overlay)
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("kafka-topics")
    )
    assert parse_topics(config["data"]["topics"]) == BRIEF_TOPICS
    job = objects(docs, "Job")["kafka-topics"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in job["containers"][0]["env"]}
    assert env["TOPICS"]["valueFrom"]["configMapKeyRef"]["name"] == config["metadata"]["name"]


def test_compose_and_kubernetes_run_the_same_topic_script():
    compose = (COMPOSE_DIR / "kafka" / "create-topics.sh").read_text()
    assert compose == (K8S / "base" / "kafka" / "create-topics.sh").read_text(), "the two copies differ"


def test_keda_examples_scale_on_real_topics_and_queues():
    """The KEDA scalers documented for the consumers name topics and queues that exist."""
    examples = [
        d for d in yaml.safe_load_all((K8S / "examples" / "keda-scaledobjects.yaml").read_text()) if d
    ]
    queues = {q.name for q in TOPOLOGY.queues}
    assert examples
    for obj in examples:
        if obj["kind"] != "ScaledObject":
            continue
        assert obj["spec"]["scaleTargetRef"]["name"] in SERVICES
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] == "kafka":
                assert meta["topic"] in TOPICS, meta["topic"]
            elif trigger["type"] == "rabbitmq":
                assert meta["queueName"] in queues, meta["queueName"]
            elif trigger["type"] != "cpu":
                pytest.fail(f"unexpected trigger {trigger['type']}")


def test_docs_name_the_brief_topics_and_replicas():
    text = (REPO / "docs" / "deploy.md").read_text()
    for topic in BRIEF_TOPICS:
        assert f"`{topic}`" in text, topic
