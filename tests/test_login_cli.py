"""`docker login` (POST /auth) with the real docker CLI against `vmctl-agent serve`: the
credentials are checked against a real registry (token and basic auth), and a private image
can then be pulled with what the CLI stored."""

from __future__ import annotations

import os
import subprocess

import docker
import pytest
from agentserver import serving
from runtimekit import busybox_image
from vmctl_agent.api.login import registry_domain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def login(agent, host: str, username: str, password: str):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    return subprocess.run(
        ["docker", "login", "-u", username, "--password-stdin", host],
        input=password, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("auth", ["token", "htpasswd"])
def test_login_checks_the_credentials_and_a_private_pull_follows(agent, make_registry, auth):
    private = make_registry(auth=auth)
    private.client().push_image("team/app", "1", busybox_image())
    ref = f"{private.host}/team/app:1"
    client = docker.DockerClient(base_url=agent.url)  # (the CLI would prompt for a login)
    with pytest.raises(docker.errors.APIError, match="docker login"):
        client.images.pull(ref)
    client.close()
    wrong = login(agent, private.host, private.username, "wrong")
    assert wrong.returncode != 0 and "incorrect username or password" in wrong.stderr
    right = login(agent, private.host, private.username, private.password)
    assert right.returncode == 0 and "Login Succeeded" in right.stdout, right.stderr
    pulled = agent.docker("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    agent.docker("logout", private.host)


def test_login_to_a_registry_that_is_down_or_needs_no_login(agent, registry):
    down = login(agent, "127.0.0.1:1", "someone", "secret")
    assert down.returncode != 0 and "127.0.0.1:1" in down.stderr
    anonymous = login(agent, registry.host, "someone", "secret")
    assert anonymous.returncode == 0 and "Login Succeeded" in anonymous.stdout
    agent.docker("logout", registry.host)


def test_server_addresses_as_the_cli_sends_them():
    assert registry_domain("https://index.docker.io/v1/") == "docker.io"
    assert registry_domain("") == "docker.io"
    assert registry_domain("http://127.0.0.1:5000/") == "127.0.0.1:5000"
    assert registry_domain("registry.example.com") == "registry.example.com"
