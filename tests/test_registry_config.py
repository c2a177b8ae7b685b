"""Where a reference's registry is looked for: dockerd's rules for mirrors and insecure hosts."""

import pytest
from vmctl_agent.store.auth import docker_config_credentials, parse_challenge
from vmctl_agent.store.manifest import Descriptor, Platform, select
from vmctl_agent.store.registry import HUB_URL, Endpoint, RegistryConfig, is_loopback


def test_docker_hub_tries_mirrors_first():
    config = RegistryConfig(mirrors=("https://mirror.example", "http://10.0.0.5:5000/"))
    assert config.endpoints("docker.io") == [
        Endpoint("https://mirror.example", True, mirror=True),
        Endpoint("http://10.0.0.5:5000", True, mirror=True),
        Endpoint(HUB_URL),
    ]


def test_mirrors_do_not_apply_to_other_registries():
    config = RegistryConfig(mirrors=("https://mirror.example",))
    assert config.endpoints("quay.io") == [Endpoint("https://quay.io")]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:5000", "127.9.9.9", "localhost:5000", "localhost", "[::1]:5000"]
)
def test_loopback_is_plain_http(host):
    assert is_loopback(host)
    assert RegistryConfig().endpoints(host) == [Endpoint(f"http://{host}")]


@pytest.mark.parametrize(
    ("insecure", "host"),
    [
        (("reg.lan:5000",), "reg.lan:5000"),
        (("reg.lan",), "reg.lan:443"),
        (("10.0.0.0/8",), "10.1.2.3:5000"),
    ],
)
def test_insecure_registries_try_https_without_verification_then_http(insecure, host):
    endpoints = RegistryConfig(insecure=insecure).endpoints(host)
    assert endpoints == [Endpoint(f"https://{host}", False), Endpoint(f"http://{host}", False)]


def test_other_registries_need_verified_tls():
    assert RegistryConfig(insecure=("10.0.0.0/8",)).endpoints("11.0.0.1") == [
        Endpoint("https://11.0.0.1")
    ]


def test_parse_bearer_challenge():
    c = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull",error="insufficient_scope"'
    )
    assert c.scheme == "bearer"
    assert c.params["realm"] == "https://auth.docker.io/token"
    assert c.params["scope"] == "repository:library/busybox:pull"


def test_credentials_from_docker_config(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},'
        ' "reg.lan:5000": {"auth": "YTpiOmM="}}}'
    )
    lookup = docker_config_credentials(str(tmp_path))
    assert lookup("docker.io").username == "user"
    assert (lookup("reg.lan:5000").username, lookup("reg.lan:5000").password) == ("a", "b:c")
    assert lookup("other") is None


def test_variant_is_preferred_when_exact():
    d = "sha256:" + "a" * 64
    e = "sha256:" + "b" * 64
    index = {
        "manifests": [
            {
                "digest": d,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v6"},
            },
            {
                "digest": e,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
        ]
    }
    assert select(index, Platform("linux", "arm", "v7")).digest == e
    assert isinstance(select(index, Platform("linux", "arm")), Descriptor)


def test_native_platform_uses_go_names():
    import platform

    if platform.machine() == "x86_64":
        assert str(Platform.native()) == "linux/amd64"
