"""cluster.yaml, cluster/*.yaml and the KubeRay manifests, checked by the schema each tool uses.

Launcher files: Ray's own launcher path (`ray up` runs _bootstrap_config: defaults, local-provider
preparation, ray-schema.json validation). KubeRay manifests: the v1 CRD fields (from KubeRay's Go
types), Ray's KubeRay autoscaler translation of the cluster spec, Serve's config schema for
serveConfigV2, and Ray's RuntimeEnv for runtime envs.
"""

from __future__ import annotations

import copy
import ipaddress
import shlex

import jsonschema
import pytest
import yaml

from forge_ray.config import load_config
from forge_ray.offline import OFFLINE_ENV
from forge_ray.operate.submit import job_runtime_env
from tests.conftest import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
AWS_YAML = REPO / "cluster" / "aws.yaml"
RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
RAYJOB = REPO / "cluster" / "kuberay" / "rayjob.yaml"
RAYSERVICE = REPO / "cluster" / "kuberay" / "rayservice.yaml"

# Fields of the KubeRay v1 CRDs (ray-operator/apis/ray/v1/*_types.go), for a structural check.
RAYJOB_SPEC = {
    "activeDeadlineSeconds", "backoffLimit", "rayClusterSpec", "submitterPodTemplate", "metadata",
    "clusterSelector", "submitterConfig", "managedBy", "deletionStrategy", "entrypoint", "runtimeEnvYAML",
    "jobId", "submissionMode", "entrypointResources", "entrypointNumCpus", "entrypointNumGpus",
    "ttlSecondsAfterFinished", "shutdownAfterJobFinishes", "suspend", "schedule",
}
RAYSERVICE_SPEC = {"serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy",
                   "excludeHeadPodFromServeSvc", "serviceUnhealthySecondThreshold",
                   "deploymentUnhealthySecondThreshold"}
CLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling", "authOptions",
                "autoscalerOptions", "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions"}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {"groupName", "replicas", "minReplicas", "maxReplicas", "numOfHosts", "rayStartParams",
                "template", "scaleStrategy", "idleTimeoutSeconds", "suspend"}
AUTOSCALER_OPTIONS = {"resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
                      "securityContext", "idleTimeoutSeconds", "upscalingMode", "version"}


def load(path):
    return yaml.safe_load(path.read_text())


def ray_up_config(config: dict) -> dict:
    """What `ray up` does with a local-provider file before it touches a machine."""
    from ray.autoscaler._private.commands import _bootstrap_config

    return _bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def prepared(config: dict) -> dict:
    """Defaults filled in and validated, as `ray up` does before calling the cloud's API."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(config))
    validate_config(out)
    return out


def assert_offline_start_commands(config: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = config[key][-1]
        assert "ray start" in start and "--disable-usage-stats" in start
        for var, value in OFFLINE_ENV.items():
            assert f"{var}={value}" in start, f"{key} lacks {var}={value}"
        assert "RAY_AUTH_MODE=token" in start


def assert_installs_forge(commands: list[str], extra: str) -> None:
    assert any("pip install" in c and f"-e '.[{extra}]'" in c and "cd ~/forge_ray" in c for c in commands), commands


# -- cluster.yaml: on-prem, local provider -------------------------------------------------------
def test_cluster_yaml_passes_ray_up_validation():
    raw = load(CLUSTER_YAML)
    config = ray_up_config(raw)
    assert config["provider"]["type"] == "local"
    workers = raw["provider"]["worker_ips"]
    for ip in [raw["provider"]["head_ip"], *workers]:
        ipaddress.ip_address(ip)
    # The launcher keeps every listed worker: min = max = number of worker_ips.
    node = config["available_node_types"][config["head_node_type"]]
    assert node["min_workers"] == node["max_workers"] == len(workers) == raw["max_workers"]
    assert config["file_mounts"]["~/forge_ray"] == "."  # the checkout travels to every node
    assert_installs_forge(raw["setup_commands"], "cpu")
    assert_offline_start_commands(raw)
    head = shlex.split(raw["head_start_ray_commands"][-1].split("&&")[-1])
    assert "--head" in head and any(a.startswith("--num-cpus=") for a in head)
    assert any(a.startswith("--num-cpus=") for a in shlex.split(raw["worker_start_ray_commands"][-1].split("&&")[-1]))


@pytest.mark.parametrize(
    "breakage, error",
    [
        (lambda c: c.pop("cluster_synced_files"), RuntimeError),  # the field FIELD_NOTES warned about
        (lambda c: c["provider"].update(worker_ips="10.0.0.11"), jsonschema.ValidationError),
        (lambda c: c.update(setup_commands="pip install forge"), jsonschema.ValidationError),
        (lambda c: c.update(colour="red"), jsonschema.ValidationError),
    ],
)
def test_ray_validation_rejects_a_broken_cluster_yaml(breakage, error):
    from ray.autoscaler._private.util import validate_config

    config = load(CLUSTER_YAML)
    breakage(config)
    with pytest.raises(error):
        validate_config(config)


# -- cluster/aws.yaml: cloud, autoscaling CPU and GPU workers -------------------------------------
def test_aws_yaml_validates_with_autoscaling_cpu_and_gpu_workers():
    raw = load(AWS_YAML)
    config = prepared(raw)
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    cpu, gpu = types["cpu_worker"], types["gpu_worker"]
    for node in (cpu, gpu):
        assert 0 <= node["min_workers"] < node["max_workers"]  # autoscaled, not fixed
        assert node["node_config"]["InstanceType"]
    assert gpu["resources"]["GPU"] >= 1 and "GPU" not in cpu["resources"]
    assert cpu["max_workers"] + gpu["max_workers"] <= config["max_workers"]
    assert_installs_forge(raw["setup_commands"], "cpu")
    assert_installs_forge(gpu["worker_setup_commands"], "gpu")
    assert_offline_start_commands(raw)
    head = shlex.split(raw["head_start_ray_commands"][-1].split("&&")[-1])
    assert "--dashboard-host=127.0.0.1" in head                 # reached through `ray dashboard` (SSH)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):   # HAProxy's admin socket: ~, 0700
        start = raw[key][-1]
        assert "H=$HOME/.forge/haproxy && mkdir -p -m 700 $H" in start, key
        for var in ("SOCKET_PATH", "METRICS_SOCKET_PATH", "CONFIG_FILE_LOC", "SERVER_STATE_BASE", "SERVER_STATE_FILE"):
            assert f"RAY_SERVE_HAPROXY_{var}=$H" in start, (key, var)


def test_aws_validation_rejects_min_workers_over_the_cluster_limit():
    config = load(AWS_YAML)
    config["available_node_types"]["cpu_worker"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        prepared(config)


# -- runtime env ----------------------------------------------------------------------------------
def test_runtime_env_file_matches_forge_submit_and_ray_accepts_it():
    from ray.runtime_env import RuntimeEnv

    raw = load(RUNTIME_ENV)
    assert raw == job_runtime_env(".")
    env = RuntimeEnv(**raw)
    assert env.env_vars() == {**OFFLINE_ENV, "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
    assert {".venv", "forge_data", ".git"} <= set(raw["excludes"])


# -- KubeRay --------------------------------------------------------------------------------------
def check_cluster_spec(spec: dict, name: str) -> dict:
    """Structure of a RayClusterSpec, then Ray's own KubeRay autoscaler translation of it."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    assert set(spec) <= CLUSTER_SPEC, set(spec) - CLUSTER_SPEC
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_OPTIONS
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP and {"rayStartParams", "template"} <= set(head)
    groups = spec["workerGroupSpecs"]
    for group in [head, *groups]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # map[string]string
        container = group["template"]["spec"]["containers"][0]
        assert container["name"] and container["image"]
    for group in groups:
        assert set(group) <= WORKER_GROUP, set(group) - WORKER_GROUP
        assert {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"} <= set(group)
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]  # autoscaled
    check_secure_by_default(spec)
    return _derive_autoscaling_config_from_ray_cr({"metadata": {"name": name, "namespace": "default"}, "spec": spec})


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_secure_by_default(spec: dict) -> None:
    """Ray token auth on; the dashboard on the pod's own address (not 0.0.0.0, not a Service of its
    own), with probes that ask it there."""
    assert spec["authOptions"] == {"mode": "token"}
    assert tuple(int(x) for x in spec["rayVersion"].split(".")[:2]) >= (2, 52)   # token auth exists
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "${FORGE_POD_IP}"
    container = head["template"]["spec"]["containers"][0]
    assert env_of(container)["FORGE_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    for probe in ("readinessProbe", "livenessProbe"):
        assert "http://${FORGE_POD_IP}:8265/" in " ".join(container[probe]["exec"]["command"])
    for group in spec["workerGroupSpecs"]:
        assert "dashboard-host" not in group["rayStartParams"]


def test_rayjob_manifest_runs_the_pipeline_on_an_autoscaling_cluster():
    from ray.runtime_env import RuntimeEnv

    doc = load(RAYJOB)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "InteractiveMode")
    # The entrypoint is the job as `ray job submit` runs it, with a forge file that validates.
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "jobs.pipeline", "--config"] and (REPO / "jobs" / "pipeline.py").is_file()
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    load_config(REPO / argv[4], overrides)
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    # The working dir is the checkout inside the image (cluster/Dockerfile); here, this checkout.
    assert f"WORKDIR {runtime_env['working_dir']}\n" in (REPO / "cluster" / "Dockerfile").read_text()
    RuntimeEnv(**{**runtime_env, "working_dir": str(REPO)})
    assert runtime_env["env_vars"] == job_runtime_env(".")["env_vars"]
    assert runtime_env["excludes"] == job_runtime_env(".")["excludes"]
    autoscaling = check_cluster_spec(spec["rayClusterSpec"], doc["metadata"]["name"])
    types = autoscaling["available_node_types"]
    assert types["gpu"]["resources"]["GPU"] == 1 and types["gpu"]["max_workers"] > types["gpu"]["min_workers"]
    assert types["cpu"]["resources"]["CPU"] == 16 and types["cpu"]["max_workers"] > types["cpu"]["min_workers"]


def test_rayservice_manifest_serves_the_forge_application():
    from ray.serve.schema import ServeDeploySchema

    doc = load(RAYSERVICE)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    spec = doc["spec"]
    assert set(spec) <= RAYSERVICE_SPEC, set(spec) - RAYSERVICE_SPEC
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    (app,) = serve_config.applications
    assert app.route_prefix == "/" and serve_config.http_options.port == 8000
    assert app.runtime_env["env_vars"] == OFFLINE_ENV
    autoscaling = check_cluster_spec(spec["rayClusterConfig"], doc["metadata"]["name"])
    # Serving replicas get GPUs: the app asks for one per replica, the llm group's pods have one.
    assert "serve.replicas.num_gpus=1" in app.args["overrides"]
    assert autoscaling["available_node_types"]["llm"]["resources"]["GPU"] == 1
    # HAProxy (Serve's ingress) on every node that runs a proxy: state in the ray user's home.
    for group in [spec["rayClusterConfig"]["headGroupSpec"], *spec["rayClusterConfig"]["workerGroupSpecs"]]:
        env = env_of(group["template"]["spec"]["containers"][0])
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "8404" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9101"
        for key in ("SOCKET_PATH", "METRICS_SOCKET_PATH", "CONFIG_FILE_LOC", "SERVER_STATE_FILE"):
            assert env[f"RAY_SERVE_HAPROXY_{key}"].startswith("/home/ray/.forge/haproxy/"), key
    # The import path is a Serve application builder that builds the app from those args
    # (binding only: nothing is deployed). The forge file path is the image's copy of the repo.
    from ray.serve import Application
    from ray.serve._private.utils import import_attr

    builder = import_attr(app.import_path)
    args = dict(app.args, config=str(REPO / app.args["config"].removeprefix("/home/ray/forge_ray/")))
    assert isinstance(builder(args), Application)


def test_committed_cluster_files_name_no_machine_paths_or_registry_hosts():
    files = [CLUSTER_YAML, *sorted((REPO / "cluster").rglob("*")), REPO / "docs" / "operate.md"]
    banned = ["/work/", "/tmp/", "/root/", "pypi.org", "pythonhosted.org", "docker.io", "ghcr.io", "quay.io",
              "gcr.io", "amazonaws.com", "nvcr.io"]
    for path in files:
        if path.is_file():
            text = path.read_text()
            for word in banned:
                assert word not in text, f"{path.relative_to(REPO)} names {word!r}"


# -- the local cluster's Serve settings (forge_ray/cluster.py) ------------------------------------
def test_haproxy_settings_come_from_the_serve_config_and_its_state_dir_is_private(tmp_path):
    import os

    from forge_ray.cluster import haproxy_env, private_dir
    from forge_ray.config.serve import ServeConfig

    d = private_dir("haproxy", root=str(tmp_path))
    assert os.stat(d).st_mode & 0o777 == 0o700
    env = haproxy_env(ServeConfig(haproxy_stats_port=18404, haproxy_metrics_port=19101), d)
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    assert all(env[k].startswith(d + os.sep) for k in env if k.endswith(("_PATH", "_LOC", "_FILE")))
    assert "RAY_SERVE_HAPROXY_SOCKET_PATH" not in haproxy_env(ServeConfig())   # remote: the nodes' own paths
    os.chmod(d, 0o777)                                   # someone opened it up: refused, not reused
    with pytest.raises(PermissionError, match="not writable by others"):
        private_dir("haproxy", root=str(tmp_path))
