"""deploy/k8s/, checked offline: no cluster runs here.

Every object of every manifest is validated against Kubernetes' own API schemas
(kubernetes-validate, strict: a field the API does not have fails) for the oldest
Kubernetes the manifests need and the newest the package knows; KEDA's
ScaledObject, which those schemas lack, against a schema of its documented fields
written here. Controls show a misspelled field fails both. Then what ties the
manifests to the code: the queue KEDA watches is the one worker/ uses, the seccomp
profile the worker pod names is shipped and is docker/worker-seccomp.json resolved
for a worker without capabilities, the commands parse, the shipped Secret (no
keys) stops the API, and the API pod's probes, run against a real `cellblock
serve` and Redis, say what their comments say.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from rq import Queue
from service_support import RedisServer, free_port, remove, scratch, wait_for

from worker.store import QUEUE, QUEUE_KEY

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
# The oldest Kubernetes the manifests need: user namespaces for pods (hostUsers:
# false) and procMount: Unmasked are on by default from 1.33 (beta); and the newest
# kubernetes-validate has schemas of. Pinned: a new release of the package adds
# versions, never changes these.
VERSIONS = ("1.33.0", "1.37.0")
KUSTOMIZATION = "kustomization.yaml"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != KUSTOMIZATION)
KEDA = ("keda.sh/v1alpha1", "ScaledObject")
SECCOMP_ROOT = "/var/lib/kubelet/seccomp"  # the kubelet's root for Localhost profiles


def documents(name: str) -> list[dict[str, Any]]:
    with open(K8S / name) as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


OBJECTS = [(name, index, doc) for name in MANIFESTS for index, doc in enumerate(documents(name))]
CORE = [(n, i, d) for n, i, d in OBJECTS if (d["apiVersion"], d["kind"]) != KEDA]


def the(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, _, d in OBJECTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# KEDA's ScaledObject (keda.sh/v1alpha1) as KEDA documents it: the fields of its
# spec, the redis scaler's metadata; nothing else may appear.
_STRING_INT = {"type": "string", "pattern": "^[0-9]+$"}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "redis"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["listName", "listLength"],
                                "properties": {
                                    "address": {"type": "string", "pattern": "^[^:]+:[0-9]+$"},
                                    "addressFromEnv": {"type": "string"},
                                    "host": {"type": "string"},
                                    "port": _STRING_INT,
                                    "usernameFromEnv": {"type": "string"},
                                    "passwordFromEnv": {"type": "string"},
                                    "listName": {"type": "string", "minLength": 1},
                                    "listLength": _STRING_INT,
                                    "activationListLength": _STRING_INT,
                                    "enableTLS": {"enum": ["true", "false"]},
                                    "unsafeSsl": {"enum": ["true", "false"]},
                                    "databaseIndex": _STRING_INT,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_scaled_object(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCALED_OBJECT_SCHEMA)
    jsonschema.validate(doc, SCALED_OBJECT_SCHEMA, cls=jsonschema.Draft202012Validator)
    spec = doc["spec"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


# -- every object validates ---------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_nothing_else():
    (kustomization,) = documents(KUSTOMIZATION)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == MANIFESTS
    assert len(MANIFESTS) == 8 and len(OBJECTS) == 12


def test_every_object_is_a_core_kind_or_the_scaled_object():
    # Nothing escapes validation: what is not ScaledObject goes to the API's schemas.
    assert len(OBJECTS) - len(CORE) == 1
    assert {d["metadata"].get("namespace") for _, _, d in OBJECTS if d["kind"] != "Namespace"} == {
        "cellblock"
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "name, index, doc", CORE, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, _, d in CORE]
)
def test_core_object_validates_strictly(name, index, doc, version):
    assert kubernetes_validate.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]


def test_the_scaled_object_validates_against_kedas_fields():
    validate_scaled_object(the("ScaledObject", "cellblock-worker"))


@pytest.mark.parametrize("version", VERSIONS)
def test_control_a_misspelled_field_fails_strict_validation(version):
    worker = copy.deepcopy(the("Deployment", "cellblock-worker"))
    kubernetes_validate.validate(worker, version, strict=True)
    context = container(worker)["securityContext"]
    context["allowPrivilegeEscalaton"] = context.pop("allowPrivilegeEscalation")
    with pytest.raises(kubernetes_validate.ValidationError, match="allowPrivilegeEscalaton"):
        kubernetes_validate.validate(worker, version, strict=True)
    # and one level up, where the pod's user namespace is asked for
    worker = copy.deepcopy(the("Deployment", "cellblock-worker"))
    pod = worker["spec"]["template"]["spec"]
    pod["hostUser"] = pod.pop("hostUsers")
    with pytest.raises(kubernetes_validate.ValidationError, match="hostUser"):
        kubernetes_validate.validate(worker, version, strict=True)


def test_control_a_misspelled_or_missing_scaled_object_field_fails():
    for change in (
        lambda spec, meta: meta.update(listname=meta["listName"]),
        lambda spec, meta: meta.pop("listName"),
        lambda spec, meta: spec.update(maxReplicas=spec.pop("maxReplicaCount")),
        lambda spec, meta: meta.update(listLength=4),  # KEDA wants strings
    ):
        doc = copy.deepcopy(the("ScaledObject", "cellblock-worker"))
        change(doc["spec"], doc["spec"]["triggers"][0]["metadata"])
        with pytest.raises(jsonschema.ValidationError):
            validate_scaled_object(doc)


# -- the manifests agree with the code ----------------------------------------------


def test_keda_watches_the_queue_the_workers_take_jobs_from():
    trigger = the("ScaledObject", "cellblock-worker")["spec"]["triggers"][0]["metadata"]
    assert trigger["listName"] == QUEUE_KEY == Queue.redis_queue_namespace_prefix + QUEUE
    assert trigger["address"] == "redis.cellblock.svc.cluster.local:6379"
    redis_service = the("Service", "redis")
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    target = the("ScaledObject", "cellblock-worker")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "cellblock-worker")


def _flatten_module():
    spec = importlib.util.spec_from_file_location("k8s_seccomp", K8S / "seccomp" / "flatten.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _allowed(profile: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Syscall name -> the ALLOW rules naming it (with their argument checks)."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            for name in rule["names"]:
                rules.setdefault(name, []).append(rule)
    return rules


def test_the_worker_pods_seccomp_profile_is_shipped_and_resolved_for_no_capabilities():
    pod = the("Deployment", "cellblock-worker")["spec"]["template"]["spec"]
    profile = pod["securityContext"]["seccompProfile"]
    assert profile == {"type": "Localhost", "localhostProfile": "cellblock/worker.json"}
    readme = (K8S / "README.md").read_text()
    assert f"{SECCOMP_ROOT}/{profile['localhostProfile']}" in readme
    flatten = _flatten_module()
    assert sorted(flatten.ARCHES) == ["amd64", "arm64"]
    for arch in flatten.ARCHES:
        shipped = K8S / "seccomp" / f"worker-{arch}.json"
        text = shipped.read_text()
        parsed = json.loads(text)
        assert text == flatten.render(arch), f"{shipped.name} is stale: run {flatten.__file__}"
        assert set(parsed) == {"defaultAction", "architectures", "syscalls"}
        assert parsed["defaultAction"] == "SCMP_ACT_ERRNO"
        assert parsed["architectures"][0] == flatten.ARCHES[arch]
        for rule in parsed["syscalls"]:
            assert set(rule) <= {"names", "action", "errnoRet", "args"}, rule
        allowed = _allowed(parsed)
        # what cells are built with, unconditionally (docker/make-worker-seccomp)
        for name in ("unshare", "mount", "umount2", "pivot_root", "mount_setattr", "sethostname"):
            assert allowed[name] == [r for r in allowed[name] if not r.get("args")], name
        # Docker's CAP_SYS_ADMIN-only rules are gone; clone keeps its flag check,
        # clone3 answers ENOSYS so libc falls back to clone
        for name in ("bpf", "setns", "open_tree", "fsopen", "perf_event_open", "syslog", "kcmp"):
            assert name not in allowed, name
        assert all(rule.get("args") for rule in allowed["clone"])
        assert "clone3" not in allowed
        clone3 = {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        assert clone3 in parsed["syscalls"]


def test_control_dockers_profile_read_as_containerd_reads_it_would_allow_more():
    # Why the flattening: containerd reads a Localhost profile as an OCI seccomp
    # section and drops Docker's "includes"/"excludes", so every conditional rule
    # of docker/worker-seccomp.json would hold.
    docker = json.loads((REPO / "docker" / "worker-seccomp.json").read_text())
    as_oci = {
        "defaultAction": docker["defaultAction"],
        "syscalls": [
            {k: v for k, v in rule.items() if k in ("names", "action", "errnoRet", "args")}
            for rule in docker["syscalls"]
        ],
    }
    allowed = _allowed(as_oci)
    assert {"bpf", "setns", "clone3"} <= set(allowed)
    assert any(not rule.get("args") for rule in allowed["clone"])
    assert "setns" not in _allowed(_flatten_module().flatten(docker, "amd64"))


def test_the_worker_pod_is_unprivileged_as_the_docs_say():
    worker = the("Deployment", "cellblock-worker")
    pod = worker["spec"]["template"]["spec"]
    context = container(worker)["securityContext"]
    assert pod["hostUsers"] is False  # required by procMount: Unmasked
    assert context["procMount"] == "Unmasked"
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000  # the image's `cellblock`
    assert pod["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    assert pod["automountServiceAccountToken"] is False
    # one cell per requested CPU, and requests = limits (Guaranteed QoS)
    args = container(worker)["args"]
    resources = container(worker)["resources"]
    assert args[args.index("--cells") + 1] == resources["requests"]["cpu"]
    assert resources["requests"] == resources["limits"]
    assert int(args[args.index("--grace") + 1]) < pod["terminationGracePeriodSeconds"]
    for deployment in (worker, the("Deployment", "cellblock-api")):
        assert "command" not in container(deployment)  # the image's entrypoint stays


def _labels(kind: str, name: str) -> dict[str, str]:
    return the(kind, name)["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_selectors_name_the_pods_they_mean():
    api, worker, redis = (
        _labels("Deployment", "cellblock-api"),
        _labels("Deployment", "cellblock-worker"),
        _labels("StatefulSet", "redis"),
    )
    policy = the("NetworkPolicy", "redis")["spec"]
    assert _selects(policy["podSelector"], redis) and not _selects(policy["podSelector"], api)
    peers = [p["podSelector"] for p in policy["ingress"][0]["from"] if "namespaceSelector" not in p]
    assert [_selects(p, api) for p in peers] == [True, False]
    assert [_selects(p, worker) for p in peers] == [False, True]
    assert not any(_selects(p, redis) for p in peers)
    egress = the("NetworkPolicy", "cellblock-worker")["spec"]
    assert _selects(egress["podSelector"], worker)
    assert _selects(egress["egress"][0]["to"][0]["podSelector"], redis)
    for service, pods in (("redis", redis), ("cellblock-api", api)):  # plain label maps
        assert _selects({"matchLabels": the("Service", service)["spec"]["selector"]}, pods)
    assert _selects(the("PodDisruptionBudget", "cellblock-api")["spec"]["selector"], api)
    assert _selects(the("PodDisruptionBudget", "cellblock-worker")["spec"]["selector"], worker)


# -- the commands and the probes, for real ------------------------------------------


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment).get("env", [])}


def _cellblock(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """The container's args, run here (`cellblock` is the image's venv entry point)."""
    assert args[0] == "cellblock"
    output = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, "-m", "cellblock", *args[1:]],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        stdout=output,
        stderr=subprocess.STDOUT if log else subprocess.PIPE,
        text=True,
    )


def test_the_worker_command_parses_and_wants_its_redis():
    worker = the("Deployment", "cellblock-worker")
    args = container(worker)["args"]
    api_env = _env(the("Deployment", "cellblock-api"))
    assert args[args.index("--redis-url") + 1] == api_env["REDIS_URL"]
    args[args.index("--redis-url") + 1] = f"redis://127.0.0.1:{free_port()}/0"  # nobody there
    process = _cellblock(args, {})
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err  # past argparse (2), at the Redis check
    assert "cannot reach Redis" in err


@pytest.fixture
def api_run():
    directory = scratch("cb-k8s-")
    redis = RedisServer(directory / "redis").start()
    yield directory, redis
    redis.stop()
    remove(directory)


def _probe(probe: dict[str, Any], port: int) -> int:
    command = probe["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    script = command[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", script], timeout=30).returncode


def test_the_api_pod_stops_on_the_shipped_secret_then_serves_and_its_probes_say_so(api_run):
    directory, redis = api_run
    api = the("Deployment", "cellblock-api")
    args, env = list(container(api)["args"]), _env(api)
    secret = the("Secret", "cellblock-api-keys")
    mount = next(m for m in container(api)["volumeMounts"] if m["name"] == "api-keys")
    volume = next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "cellblock-api-keys"
    key_name = Path(env["CELLBLOCK_API_KEYS_FILE"]).relative_to(mount["mountPath"]).as_posix()
    keys = directory / "api-keys"
    keys.write_text(secret["stringData"][key_name])  # as shipped: comments, no key
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env.update(REDIS_URL=redis.url, CELLBLOCK_API_KEYS_FILE=str(keys), HOME=str(directory))

    refused = _cellblock(args, env)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "no API keys configured" in err

    keys.write_text(keys.read_text() + "k8s-test-key\n")
    serve = _cellblock(args, env, log=directory / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}/v1/health"

        def answering():
            try:
                return httpx.get(url, timeout=5)
            except httpx.TransportError:
                return None

        health = wait_for(answering, 60, "cellblock serve")
        assert health.status_code == 503  # no worker here: HTTP says not ok...
        ready, live = container(api)["readinessProbe"], container(api)["livenessProbe"]
        assert _probe(ready, port) == 0  # ...yet Redis answers: ready to queue
        assert _probe(live, port) == 0
        redis.stop()
        wait_for(lambda: httpx.get(url, timeout=5).json()["redis"]["ok"] is False, 30, "Redis down")
        assert _probe(ready, port) == 1  # out of the Service while Redis is away
        assert _probe(live, port) == 0  # but not restarted for it
    finally:
        serve.terminate()
        serve.wait(30)
    assert _probe(container(api)["livenessProbe"], port) != 0  # and dead when it is gone
