"""cluster.yaml and cluster-gcp.yaml pass Ray's own cluster-config checks, and hold what nrt needs."""

import copy
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("ray")
pytest.importorskip("jsonschema")

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402 (after the skip)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"cluster.yaml": ("aws", "s3://"), "cluster-gcp.yaml": ("gcp", "gs://")}


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ray_accepts_the_cluster_config(name):
    """What `ray up` does before it launches anything: fill in the provider's defaults, then validate."""
    config = prepare_config(_load(name))
    validate_config(config)
    assert config["provider"]["type"] == CONFIGS[name][0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_cluster_has_a_cpu_head_and_autoscaling_gpu_workers(name):
    config = _load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]
    workers = [t for key, t in types.items() if key != config["head_node_type"]]
    assert len(workers) == 1
    [worker] = workers
    if name == "cluster.yaml":
        assert not head["InstanceType"].startswith(("g", "p"))  # no GPU on the head
        assert worker["node_config"]["InstanceType"].startswith(("g", "p"))
    else:
        assert "guestAccelerators" not in head and not head["machineType"].startswith(("a2", "a3", "g2"))
        assert worker["node_config"]["guestAccelerators"][0]["acceleratorCount"] >= 1
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_node_gets_the_project_the_token_and_the_shared_storage(name):
    config = _load(name)
    assert config["file_mounts"]["~/nrt"] == "."
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = " ".join(config["setup_commands"])
    assert 'pip install -q -e "$HOME/nrt[tune,serve]"' in setup  # setup_commands run on head and workers
    assert "RAY_AUTH_MODE=token" in setup and f"NRT_STORAGE={CONFIGS[name][1]}" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert len(start) == 1 and ". ~/nrt.env" in start[0]  # the token mode and storage reach Ray


def test_the_validation_is_not_a_formality():
    config = prepare_config(_load("cluster.yaml"))
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu"]["min_workers"] = "none"
    with pytest.raises(Exception, match="none"):
        validate_config(broken)
    broken = copy.deepcopy(config)
    broken["setup_command"] = broken.pop("setup_commands")  # a misspelt key
    with pytest.raises(Exception, match="setup_command"):
        validate_config(broken)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_serve_config_imports_the_app_from_where_the_cluster_puts_the_repository(name):
    config = _load(name)
    [mount] = [target for target, source in config["file_mounts"].items() if source == "."]
    home = f"/home/{config['auth']['ssh_user']}"
    repository = mount.replace("~", home, 1)
    [app] = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"]
    assert app["runtime_env"]["env_vars"]["PYTHONPATH"] == repository
    assert (ROOT / Path(*app["import_path"].split(":")[0].split("."))).with_suffix(".py").is_file()
