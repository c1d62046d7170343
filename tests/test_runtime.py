"""nrt.runtime.connect: how a local Ray is started (ray.init recorded, not run)."""

import os

import pytest
import ray

from nrt import runtime

VAR, DEFAULT = runtime.PROXY_READY_ENV


@pytest.fixture
def init_calls(monkeypatch):
    """ray.init replaced by a recorder of its arguments and of the variable as Ray's raylet would inherit it."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append({**kw, VAR: os.environ.get(VAR)}))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_a_local_ray_gives_serves_proxy_a_minute_to_start(init_calls, monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    assert runtime.connect(num_cpus=2) is True
    (call,) = init_calls
    assert call["address"] == "local" and call["num_cpus"] == 2
    assert call[VAR] == DEFAULT == "60"


def test_the_environments_own_proxy_timeout_wins(init_calls, monkeypatch):
    monkeypatch.setenv(VAR, "7")
    runtime.connect()
    assert init_calls[0][VAR] == "7"


def test_joining_a_cluster_leaves_the_environment_alone(init_calls, monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    runtime.connect(address="ray://head:10001")
    assert init_calls[0]["address"] == "ray://head:10001"
    assert init_calls[0][VAR] is None
