"""The Kubernetes manifests in ``infra/k8s/`` agree with the code they deploy.

No cluster is needed: every file parses, each object has the kind its file promises, the Serve
import path builds the real application, the RayJobs' entrypoints are modules here whose options
parse, every ``CL_*`` variable is a configuration key, and Kafka's topics are the ones the config
names, replicated as the ingress's ``acks=all`` needs.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import shlex
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from cl.config import Config, ConfigError, load_config

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"

RAY = "ray.io/v1"
STRIMZI = "kafka.strimzi.io/v1beta2"
EXPECTED = {
    "namespace.yaml": {("v1", "Namespace")},
    "config.yaml": {("v1", "ConfigMap")},
    "state-volume.yaml": {("v1", "PersistentVolumeClaim")},
    "api-keys.yaml": {("v1", "Secret")},
    "rayservice.yaml": {(RAY, "RayService")},
    "rayjob-learner.yaml": {(RAY, "RayJob")},
    "rayjob-retrain.yaml": {(RAY, "RayJob")},
    "kafka-strimzi.yaml": {(STRIMZI, "Kafka"), (STRIMZI, "KafkaNodePool"), (STRIMZI, "KafkaTopic")},
    "mlflow.yaml": {("v1", "Secret"), ("v1", "Service"), ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment")},
    "kustomization.yaml": {("kustomize.config.k8s.io/v1beta1", "Kustomization")},
}
ON_DEMAND = {"rayjob-retrain.yaml"}  # deliberately outside kustomization.yaml


def _load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def _objects(kind: str) -> list[dict[str, Any]]:
    return [d for name in EXPECTED for d in _load(name) if d["kind"] == kind]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _objects(kind) if name is None or d["metadata"].get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside ``node``, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _serve_config() -> dict[str, Any]:
    return yaml.safe_load(_one("RayService")["spec"]["serveConfigV2"])


def _config_env() -> dict[str, str]:
    """The ``CL_*`` settings every Ray pod gets (the ConfigMap its containers load with envFrom)."""
    return {k: str(v) for k, v in _one("ConfigMap", "cl-config")["data"].items()}


def _cl_variables() -> dict[str, str]:
    """Every ``CL_*`` name the manifests set anywhere, with its value."""
    found = dict(_config_env())
    for name in EXPECTED:
        for node in _walk(_load(name)):
            for item in node.get("env") or []:
                if isinstance(item, dict) and str(item.get("name", "")).startswith("CL_"):
                    found[item["name"]] = str(item.get("value", ""))
    for app in _serve_config()["applications"]:
        found.update({k: str(v) for k, v in (app.get("args") or {}).items() if k.startswith("CL_")})
        found.update((app.get("runtime_env") or {}).get("env_vars") or {})
    for job in _objects("RayJob"):
        runtime_env = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}") or {}
        found.update(runtime_env.get("env_vars") or {})
    return found


def _deployed_config() -> Config:
    return load_config(path=None, env=_config_env())


# -- files and kinds ----------------------------------------------------------------------------


def test_every_manifest_parses_with_the_kinds_its_file_promises():
    assert {p.name for p in K8S.glob("*.yaml")} == set(EXPECTED)
    for name, kinds in EXPECTED.items():
        docs = _load(name)
        assert {(d["apiVersion"], d["kind"]) for d in docs} == kinds, name
        for d in docs:
            if d["kind"] != "Kustomization":
                meta = d["metadata"]
                assert meta.get("name") or meta.get("generateName"), f"{name}: a {d['kind']} without a name"


def test_kustomization_lists_every_manifest_but_the_on_demand_retrain():
    resources = _load("kustomization.yaml")[0]["resources"]
    assert set(resources) == set(EXPECTED) - {"kustomization.yaml"} - ON_DEMAND
    assert len(resources) == len(set(resources))


def test_every_referenced_configmap_secret_and_claim_is_defined():
    defined = {
        (d["kind"], d["metadata"].get("name")) for name in EXPECTED for d in _load(name) if d["kind"] != "Kustomization"
    }
    wanted = set()
    for node in _walk([_load(name) for name in EXPECTED]):
        if "configMapRef" in node:
            wanted.add(("ConfigMap", node["configMapRef"]["name"]))
        if "secretRef" in node:
            wanted.add(("Secret", node["secretRef"]["name"]))
        if "secretName" in node:
            wanted.add(("Secret", node["secretName"]))
        if "claimName" in node:
            wanted.add(("PersistentVolumeClaim", node["claimName"]))
    assert wanted and wanted <= defined, sorted(wanted - defined)


# -- Ray: the Serve application and the jobs ----------------------------------------------------


def test_serve_config_is_valid_for_ray_serve():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(_serve_config())  # raises naming the bad field


def test_serve_import_path_builds_the_application(monkeypatch):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.build_app import build_app as build_deployments

    for name in [k for k in os.environ if k.startswith("CL_")]:
        monkeypatch.delenv(name)
    for name, value in _config_env().items():
        monkeypatch.setenv(name, value)
    apps = _serve_config()["applications"]
    assert len(apps) == 1
    app = apps[0]
    module, _, attr = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)
    assert callable(builder)
    application = call_user_app_builder_with_args_if_necessary(builder, app.get("args") or {})  # what Serve runs
    # Deployment names the config overrides must be the application's.
    built = build_deployments(application, name=app["name"])
    names = {d.name for d in built.deployments}
    assert {d["name"] for d in app.get("deployments", [])} <= names, names
    assert app["name"] == _deployed_config().app  # the status board and rollout controller are named after it


def test_serve_builder_refuses_arguments_that_are_not_config_variables():
    from serve.app import app_from_env

    with pytest.raises(ConfigError, match="replicas"):
        app_from_env({"replicas": 2})


def _entrypoint(job: dict[str, Any]) -> tuple[str, list[str]]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"], f"{job['metadata']}: run modules of this repo, `python -m <module>`"
    return argv[2], argv[3:]


def test_rayjob_entrypoints_are_modules_of_this_repo_and_their_options_parse():
    modules = {}
    for job in _objects("RayJob"):
        module, args = _entrypoint(job)
        assert importlib.util.find_spec(module) is not None, module
        modules[module] = args
    assert set(modules) == {"learners.online", "learners.retrain"}
    from learners.retrain import build_parser

    build_parser().parse_args(modules["learners.retrain"])  # SystemExit on a bad option
    assert modules["learners.online"] == []  # runs until deleted


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_learner_cluster_holds_one_cpu_per_rank():
    job = _one("RayJob", "cl-learner")
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    cpus = sum(
        g["replicas"] * _cpus(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]) for g in groups
    )
    assert cpus >= _deployed_config().learner.workers


# -- configuration ------------------------------------------------------------------------------


def _field(name: str) -> tuple[str, str]:
    """The ``(section, key)`` a ``CL_*`` variable sets, as ``cl.config`` maps them ("" = top level)."""
    from cl.config.loading import env_values

    return next(((section, key) for section, values in env_values({name: "x"}).items() for key in values), ("?", name))


def test_every_cl_variable_is_a_config_key_and_the_values_load():
    from cl.config.service import SECTIONS

    variables = _cl_variables()
    assert {"CL_KAFKA_BOOTSTRAP", "CL_MLFLOW_URI", "CL_STATE_DIR"} <= set(variables)
    for name in variables:
        section, key = _field(name)
        assert section in SECTIONS or section == "", f"{name}: cl.config does not read it"
        fields = {f.name for f in dataclasses.fields(SECTIONS[section] if section else Config)}
        assert key in fields and key not in SECTIONS, f"{name}: no key {key!r} in [{section or 'top level'}]"
    config = load_config(path=None, env=variables)  # ConfigError names any bad value
    assert not config.kafka.managed and not config.mlflow.managed


def test_services_named_in_the_config_exist():
    config = _deployed_config()
    kafka = _one("Kafka")["metadata"]["name"]
    assert config.kafka.bootstrap_servers == f"{kafka}-kafka-bootstrap:9092"
    mlflow = _one("Service", "mlflow")
    assert config.mlflow.tracking_uri == f"http://mlflow:{mlflow['spec']['ports'][0]['port']}"


def test_state_and_keys_live_on_the_mounted_volumes():
    config = _deployed_config()
    mounts = {m["mountPath"]: m for node in _walk(_load("rayservice.yaml")) for m in node.get("volumeMounts") or []}
    assert str(config.state_dir) in mounts and not mounts[str(config.state_dir)].get("readOnly")
    assert config.audit_path.is_relative_to(config.state_dir)
    assert str(config.keys_path.parent) in mounts and mounts[str(config.keys_path.parent)]["readOnly"]
    assert _one("PersistentVolumeClaim", "cl-state")["spec"]["accessModes"] == ["ReadWriteMany"]


# -- Kafka and MLflow ---------------------------------------------------------------------------


def test_strimzi_topics_are_the_configs_with_replication_3_and_min_insync_2():
    defaults, deployed = load_config(path=None, env={}), _deployed_config()
    topics = {t["spec"]["topicName"]: t["spec"] for t in _objects("KafkaTopic")}
    t = defaults.topics
    assert (
        set(topics)
        == {t.requests, t.feedback, t.dlq, t.events}
        == {"cl.requests", "cl.feedback", "cl.feedback.dlq", "cl.events"}
    )
    d = deployed.topics
    assert {d.requests, d.feedback, d.dlq, d.events} == set(topics)
    k = deployed.kafka
    wanted = {
        d.requests: k.requests_partitions,
        d.feedback: k.feedback_partitions,
        d.dlq: k.dlq_partitions,
        d.events: k.events_partitions,
    }
    for name, spec in topics.items():
        assert spec["partitions"] == wanted[name], name
        assert spec["replicas"] == 3 and int(spec["config"]["min.insync.replicas"]) == 2, name
    assert k.feedback_partitions >= deployed.learner.workers  # rank r reads partitions p % workers == r
    labels = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in _objects("KafkaTopic")}
    assert labels == {_one("Kafka")["metadata"]["name"]}


def test_kafka_is_three_kraft_brokers_that_keep_acked_writes():
    kafka = _one("Kafka")
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    pools = _objects("KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) == 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) % 2 == 1  # a quorum
    conf = kafka["spec"]["kafka"]["config"]
    assert int(conf["default.replication.factor"]) == 3 and int(conf["min.insync.replicas"]) == 2
    assert int(conf["offsets.topic.replication.factor"]) == 3 and conf["auto.create.topics.enable"] is False
    assert kafka["spec"]["kafka"]["version"] == load_config(path=None, env={}).kafka.version


def test_mlflow_uses_postgres_and_an_object_store_behind_its_proxy():
    container = _one("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value("--backend-store-uri").startswith("postgresql://")
    assert value("--artifacts-destination").startswith("s3://")
    assert "--serve-artifacts" in args
    assert "mlflow:*" in value("--allowed-hosts").split(",")  # MLflow 3 refuses other Host headers
    assert _one("StatefulSet", "mlflow-postgres")["spec"]["serviceName"] == "mlflow-postgres"
