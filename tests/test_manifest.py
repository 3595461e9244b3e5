"""`tei-export manifest`: Kubernetes manifests for several Triton replicas, parsed back as YAML, and the checks of a
repository's config.pbtxt files against the pod size. No cluster is involved: these are parse-level tests."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from exporter.cli import main
from exporter.errors import ConfigError, RepositoryError
from exporter.manifest import (DEFAULT_IMAGE, TRITON_IMAGE_TAG, DeploymentOptions, check_repository_fit,
                               render_manifest, split_image, write_manifest)
from exporter.triton.openmp import SPIN_SETTINGS


def _docs(options: DeploymentOptions) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(render_manifest(options))}


def _container(docs: dict) -> dict:
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _model(repo: Path, name: str, body: str) -> Path:
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(f'name: "{name}"\n' + textwrap.dedent(body), encoding="utf-8")
    return folder


LIBTORCH = """\
platform: "pytorch_libtorch"
max_batch_size: 16
input [ {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }} ]
output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ 384 ] }} ]
instance_group [ {{ count: {count} kind: {kind}{gpus} }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
parameters {{ key: "INTRA_OP_THREAD_COUNT" value: {{ string_value: "{threads}" }} }}
parameters {{ key: "INTER_OP_THREAD_COUNT" value: {{ string_value: "1" }} }}
"""


def libtorch(count=1, kind="KIND_CPU", threads=2, gpus="", platform="pytorch_libtorch", max_batch_size=16) -> str:
    text = LIBTORCH.format(count=count, kind=kind, threads=threads, gpus=f" gpus: [ {gpus} ]" if gpus else "")
    text = text.replace('"pytorch_libtorch"', f'"{platform}"').replace("max_batch_size: 16",
                                                                       f"max_batch_size: {max_batch_size}")
    return text if max_batch_size else text.replace("dynamic_batching { max_queue_delay_microseconds: 100 }\n", "")


# ------------------------------------------------------------------------------------------------- rendering


def test_deployment_and_service_values():
    docs = _docs(DeploymentOptions("s3://bucket/models", name="bge", replicas=3, cpus_per_pod=8,
                                   memory_per_pod="16Gi"))
    assert set(docs) == {"Deployment", "Service"}
    deployment, service = docs["Deployment"], docs["Service"]
    assert deployment["apiVersion"] == "apps/v1" and deployment["metadata"]["name"] == "bge"
    assert deployment["spec"]["replicas"] == 3
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    c = _container(docs)
    assert c["image"] == DEFAULT_IMAGE == f"nvcr.io/nvidia/tritonserver:{TRITON_IMAGE_TAG}-py3"
    assert "--model-repository=s3://bucket/models" in c["args"] and "--model-control-mode=none" in c["args"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["resources"]["limits"] == {"cpu": "8", "memory": "16Gi"} == c["resources"]["requests"]
    # The Service fronts every replica: same selector, the three ports.
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [8000, 8001, 8002]


def test_gpu_resource_only_with_gpus():
    cpu = _container(_docs(DeploymentOptions("gs://b/m", gpus_per_pod=0)))
    gpu = _container(_docs(DeploymentOptions("gs://b/m", gpus_per_pod=2)))
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert "nvidia.com/gpu" not in str(cpu)
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 2


def _credentials(container: dict) -> list[dict]:
    """The container's env less the OpenMP settings every pod gets (exporter/triton/openmp.py)."""
    env = container.get("env", [])
    assert [e for e in env if e["name"] in dict(SPIN_SETTINGS)] == [{"name": k, "value": v} for k, v in SPIN_SETTINGS]
    return [e for e in env if e["name"] not in dict(SPIN_SETTINGS)]


def test_s3_credentials_come_from_a_secret():
    env = {e["name"]: e for e in _credentials(_container(_docs(DeploymentOptions("s3://b/m",
                                                                                  credentials_secret="aws-keys"))))}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "aws-keys" and ref["key"] == var and not ref.get("optional")
    assert env["AWS_DEFAULT_REGION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    default = _container(_docs(DeploymentOptions("s3://b/m")))
    assert _credentials(default)[0]["valueFrom"]["secretKeyRef"]["name"] == "triton-storage-credentials"
    # No secret (IRSA, workload identity): no credential variables, the service account carries them.
    irsa = _docs(DeploymentOptions("s3://b/m", credentials_secret="", service_account="triton-reader"))
    assert _credentials(_container(irsa)) == []
    assert irsa["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "triton-reader"


def test_azure_gcs_and_pvc_storage():
    azure = {e["name"] for e in _credentials(_container(_docs(DeploymentOptions("as://acct/container/models"))))}
    assert azure == {"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"}
    gcs = _docs(DeploymentOptions("gs://bucket/models", credentials_secret="gcs-key"))
    key = {e["name"]: e["value"] for e in _credentials(_container(gcs))}["GOOGLE_APPLICATION_CREDENTIALS"]
    mounts = {m["name"]: m["mountPath"] for m in _container(gcs)["volumeMounts"]}
    assert key == mounts["storage-credentials"] + "/key.json"
    pvc = _docs(DeploymentOptions("pvc://models-claim/exports/v1"))
    c = _container(pvc)
    assert "--model-repository=/models/exports/v1" in c["args"] and _credentials(c) == []
    volumes = {v["name"]: v for v in pvc["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"] == {"claimName": "models-claim", "readOnly": True}


def test_kserve_inference_service():
    docs = _docs(DeploymentOptions("s3://bucket/models", kind="kserve", replicas=4, gpus_per_pod=1, name="emb"))
    assert set(docs) == {"InferenceService"}
    isvc = docs["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"] == "emb"
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 4
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "triton"
    assert model["storageUri"] == "s3://bucket/models"
    assert model["runtimeVersion"] == f"{TRITON_IMAGE_TAG}-py3"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    azure = _docs(DeploymentOptions("as://acct/container/models", kind="kserve"))["InferenceService"]
    assert azure["spec"]["predictor"]["model"]["storageUri"] == "https://acct.blob.core.windows.net/container/models"
    assert "nvidia.com/gpu" not in azure["spec"]["predictor"]["model"]["resources"]["limits"]


def test_image_tag_parsing():
    assert split_image("nvcr.io/nvidia/tritonserver:25.01-py3") == ("nvcr.io/nvidia/tritonserver", "25.01-py3")
    assert split_image("registry:5000/triton") == ("registry:5000/triton", "latest")
    assert DeploymentOptions("s3://b/m", image="registry:5000/triton:custom").image_tag == "custom"


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("changes, field_name", [
    ({"name": "Bad_Name"}, "name"),
    ({"name": "-leading"}, "name"),
    ({"name": "x" * 64}, "name"),
    ({"storage_uri": "/local/models"}, "storage_uri"),
    ({"storage_uri": "http://host/models"}, "storage_uri"),
    ({"storage_uri": "s3://"}, "storage_uri"),
    ({"storage_uri": "s3://bucket/../etc"}, "storage_uri"),
    ({"storage_uri": "as://account-only"}, "storage_uri"),
    ({"storage_uri": "pvc://Bad_Claim/x"}, "storage_uri"),
    ({"replicas": -1}, "replicas"),
    ({"replicas": 0}, "replicas"),
    ({"gpus_per_pod": -1}, "gpus_per_pod"),
    ({"cpus_per_pod": 0}, "cpus_per_pod"),
    ({"memory_per_pod": "8 GB"}, "memory_per_pod"),
    ({"kind": "statefulset"}, "kind"),
    ({"grpc_port": 8000}, "http_port/grpc_port/metrics_port"),
    ({"image": "my image"}, "image"),
    ({"kind": "kserve", "image": "example.com/my-triton:1"}, "image"),
    ({"credentials_secret": "Not A Name"}, "credentials_secret"),
])
def test_invalid_options_name_the_field_and_the_fix(changes, field_name):
    with pytest.raises(ConfigError) as info:
        DeploymentOptions(**{"storage_uri": "s3://bucket/models", **changes})
    assert info.value.where == f"deployment option {field_name}"
    assert info.value.fix


def test_az_prefix_points_at_tritons_as_prefix():
    with pytest.raises(ConfigError, match="as://") as info:
        DeploymentOptions("az://account/container/models")
    assert "as://account/container/path" in info.value.fix


# ------------------------------------------------------------------------------------------------- writing


def test_write_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "k8s" / "triton.yaml"
    path, warnings = write_manifest(DeploymentOptions("s3://b/m", replicas=2), out)
    assert path == out and warnings == []
    assert out.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RepositoryError) as info:
        write_manifest(DeploymentOptions("s3://b/m", replicas=5), out)
    assert info.value.where == str(out) and "--force" in info.value.fix
    assert next(yaml.safe_load_all(out.read_text()))["spec"]["replicas"] == 2  # untouched
    write_manifest(DeploymentOptions("s3://b/m", replicas=5), out, force=True)
    assert next(yaml.safe_load_all(out.read_text()))["spec"]["replicas"] == 5
    assert sorted(p.name for p in out.parent.iterdir()) == ["triton.yaml"]  # no temporary file left behind


def test_write_returns_repository_warnings(tmp_path):
    _model(tmp_path / "repo", "minilm", libtorch(count=2, threads=8))
    _, warnings = write_manifest(DeploymentOptions("s3://b/m", cpus_per_pod=4), tmp_path / "m.yaml",
                                 repository=tmp_path / "repo")
    assert len(warnings) == 1 and "minilm" in warnings[0]


# -------------------------------------------------------------------------------------------- repository fit


def test_oversubscribed_threads_are_named(tmp_path):
    _model(tmp_path, "minilm", libtorch(count=2, threads=8))
    (warning,) = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", cpus_per_pod=4))
    assert "'minilm'" in warning and "INTRA_OP_THREAD_COUNT 8" in warning
    assert "2 instance(s)" in warning and "16 threads" in warning and "cpus_per_pod 4" in warning
    assert "first model loaded" in warning


def test_clean_repository_has_no_warnings(tmp_path):
    _model(tmp_path, "minilm", libtorch(count=2, threads=2))
    assert check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", cpus_per_pod=4)) == []
    _model(tmp_path, "bge", libtorch(count=1, kind="KIND_GPU", threads=2, gpus="0, 1"))
    assert check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", cpus_per_pod=4, gpus_per_pod=2)) == [
        "model 'minilm': instance_group kind KIND_CPU while each pod requests 2 GPU(s): the GPU stays idle; use "
        "KIND_GPU or --gpus-per-pod 0"]


def test_gpu_kind_without_gpus_will_not_load(tmp_path):
    _model(tmp_path, "bge", libtorch(kind="KIND_GPU", threads=1))
    (warning,) = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", gpus_per_pod=0))
    assert "'bge'" in warning and "KIND_GPU" in warning and "will not load" in warning


def test_gpu_kind_counts_instances_per_gpu(tmp_path):
    _model(tmp_path, "bge", libtorch(count=2, kind="KIND_GPU", threads=1))
    (warning,) = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", gpus_per_pod=4, cpus_per_pod=4))
    assert "8 instance(s)" in warning  # count 2 on each of the pod's 4 GPUs


def test_gpu_indices_beyond_the_pod(tmp_path):
    _model(tmp_path, "bge", libtorch(kind="KIND_GPU", threads=1, gpus="0, 3"))
    (warning,) = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", gpus_per_pod=2))
    assert "gpus [0, 3]" in warning and "[3]" in warning and "will not load" in warning


def test_missing_thread_count_and_differing_thread_counts(tmp_path):
    _model(tmp_path, "a", libtorch(threads=1))
    _model(tmp_path, "b", libtorch(threads=2))
    _model(tmp_path, "c", libtorch().replace('parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: '
                                             '"2" } }\n', ""))
    warnings = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", cpus_per_pod=4))
    assert len(warnings) == 2
    assert "'c': no INTRA_OP_THREAD_COUNT" in warnings[0]
    assert "a=1, b=2" in warnings[1] and "first model loaded" in warnings[1]


def test_torch_aoti_needs_a_recent_image(tmp_path):
    _model(tmp_path, "bge_pt2", libtorch(platform="torch_aoti", threads=1, max_batch_size=0))
    old = DeploymentOptions("s3://b/m", image="nvcr.io/nvidia/tritonserver:25.08-py3")
    (warning,) = check_repository_fit(tmp_path, old)
    assert "'bge_pt2'" in warning and "torch_aoti" in warning and "25.08-py3" in warning
    assert check_repository_fit(tmp_path, DeploymentOptions("s3://b/m")) == []
    assert check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", image="my/triton:custom")) == []


def test_python_and_ensemble_models_are_not_held_to_torch_rules(tmp_path):
    _model(tmp_path, "minilm_tokenizer", """\
        backend: "python"
        max_batch_size: 0
        input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
        output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1, -1 ] } ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
        """)
    assert check_repository_fit(tmp_path, DeploymentOptions("s3://b/m", gpus_per_pod=1)) == []


def test_repository_edge_cases(tmp_path):
    with pytest.raises(ConfigError) as info:
        check_repository_fit(tmp_path / "absent", DeploymentOptions("s3://b/m"))
    assert info.value.where == str(tmp_path / "absent")
    (warning,) = check_repository_fit(tmp_path, DeploymentOptions("s3://b/m"))
    assert "no model" in warning


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_manifest_and_prints_warnings(tmp_path):
    repo = tmp_path / "repo"
    _model(repo, "minilm", libtorch(count=2, threads=8))
    out = tmp_path / "triton.yaml"
    args = ["manifest", str(repo), "--storage-uri", "s3://bucket/models", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.read_text())}
    defaults = DeploymentOptions("s3://bucket/models")
    assert docs["Deployment"]["spec"]["replicas"] == defaults.replicas
    assert "--model-repository=s3://bucket/models" in _container(docs)["args"]
    assert f"kubectl apply -f {out}" in result.output
    assert "warning: model 'minilm': INTRA_OP_THREAD_COUNT 8" in result.output  # stderr is mixed in by default

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--force" in again.output
    kserve = CliRunner().invoke(main, ["manifest", "--storage-uri", "gs://b/m", "--out", str(out),
                                       "--kind", "kserve", "--replicas", "3", "--force"])
    assert kserve.exit_code == 0, kserve.output
    isvc = next(yaml.safe_load_all(out.read_text()))
    assert isvc["kind"] == "InferenceService" and isvc["spec"]["predictor"]["minReplicas"] == 3


def test_cli_help_states_the_library_defaults():
    # Joined as one line; click may wrap a long default after a hyphen ("triton-" / "embeddings").
    help_text = " ".join(CliRunner().invoke(main, ["manifest", "--help"]).output.split()).replace("- ", "-")
    d = DeploymentOptions("s3://b/m")
    for stated in (f"(default: {d.replicas})", f"(default: {d.gpus_per_pod})", f"(default: {d.cpus_per_pod})",
                   f"(default: {d.memory_per_pod})", f"(default: {d.image})", f"(default: {d.name})"):
        assert stated in help_text


def test_cli_bad_option_is_one_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["manifest", "--storage-uri", "s3://b/m", "--out", str(tmp_path / "x.yaml"),
                                       "--replicas", "-2"])
    assert result.exit_code == 1 and "error: replicas -2 is out of range" in result.output
    assert not (tmp_path / "x.yaml").exists()
