"""References are normalised exactly as docker normalises them."""

import pytest
from vmctl_agent.errors import InvalidReference
from vmctl_agent.store.reference import is_image_id, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("hello-world", "docker.io/library/hello-world:latest", "hello-world:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("index.docker.io/library/x:1", "docker.io/library/x:1", "x:1"),
        ("docker.io/library/x", "docker.io/library/x:latest", "x:latest"),
        ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest"),
        ("localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000/a/b/c:v1.2-rc_3", None),
        ("127.0.0.1:5000/ns/repo:tag", "127.0.0.1:5000/ns/repo:tag", None),
        ("quay.io/org/img", "quay.io/org/img:latest", None),
        (f"repo@{DIGEST}", f"docker.io/library/repo@{DIGEST}", f"repo@{DIGEST}"),
        (f"h.io/r:t@{DIGEST}", f"h.io/r:t@{DIGEST}", None),
        ("my_app__x.y-z", "docker.io/library/my_app__x.y-z:latest", "my_app__x.y-z:latest"),
    ],
)
def test_normalises_like_docker(text, full, familiar):
    ref = parse(text)
    assert str(ref) == full
    assert ref.familiar() == (familiar or full)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Foo", "must be lowercase"),
        ("", "invalid reference format"),
        (" busybox", "invalid reference format"),
        ("busybox:", "bad tag"),
        ("busybox:-x", "bad tag"),
        ("a//b", "invalid reference format"),
        ("a/b/", "invalid reference format"),
        ("-a", "invalid reference format"),
        ("foo:bar/baz", "bad registry host"),
        ("repo@sha256:abc", "invalid reference format"),
        ("repo@sha256:" + "g" * 64, "invalid checksum digest format"),
        ("a" * 64, "cannot specify 64-byte hexadecimal strings"),
        ("x/" + "a" * 260, "longer than 255"),
    ],
)
def test_malformed_references_are_refused_clearly(text, message):
    with pytest.raises(InvalidReference, match=message):
        parse(text)


def test_image_ids_are_not_references():
    assert is_image_id(DIGEST)
    assert is_image_id("ab" * 32)
    assert not is_image_id("busybox")
