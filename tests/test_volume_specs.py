"""What a container asks to have mounted, parsed as dockerd parses it and refused in its
words (volumes/specs.py, resolve.asked): pure, no engine needed."""

from __future__ import annotations

import pytest
from vmctl_agent import config
from vmctl_agent.errors import AgentError, InvalidMount
from vmctl_agent.volumes import specs
from vmctl_agent.volumes.resolve import asked


def test_binds_parse_as_dockerd_parses_them():
    bind = specs.from_bind("/src:/dst:ro,z,rslave")
    assert (bind.type, bind.source, bind.destination) == ("bind", "/src", "/dst")
    assert bind.read_only
    assert (bind.propagation, bind.mode) == ("rslave", "ro,z,rslave")
    named = specs.from_bind("data:/data")
    assert (named.type, named.source, named.mode, named.copy_up) == ("volume", "data", "z", True)
    assert specs.from_bind("data:/data:nocopy").copy_up is False
    assert specs.from_bind("/src:/dst").propagation == "rprivate"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("", "invalid volume specification: ''"),
        ("/a:/b:/c:/d", "invalid volume specification: '/a:/b:/c:/d'"),
        ("/a:rw", "invalid volume specification: '/a:rw'"),
        ("/a:/b:bogus", "invalid mode: bogus"),
        ("/a:/b:ro,rw", "invalid mode: ro,rw"),
        ("/a:b", "invalid mount path: 'b' mount path must be absolute"),
        ("data:/d:rshared", 'type "volume": field BindOptions must not be specified'),
        ("/a:/d:nocopy", 'type "bind": field VolumeOptions must not be specified'),
    ],
)
def test_bad_binds_get_dockerds_words(raw, words):
    with pytest.raises(InvalidMount, match=None) as caught:
        specs.from_bind(raw)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"Type": "bind", "Target": "/x"}, "field Source must not be empty"),
        ({"Type": "bind", "Source": "rel", "Target": "/x"}, "'rel' mount path must be absolute"),
        ({"Type": "nfs", "Target": "/x"}, 'for type "nfs": mount type unknown'),
        ({"Type": "volume", "Source": "v"}, "field Target must not be empty"),
        ({"Type": "volume", "Target": "/x", "VolumeOptions": {"Subpath": "a"}},
         "must not set Subpath when using anonymous volumes"),
        ({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "a/../.."}},
         "subpath must be a relative path within the volume"),
        ({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"Subpath": "/etc"}},
         "subpath must be a relative path within the volume"),
        ({"Type": "volume", "Target": "/x", "Consistency": "cached", "VolumeOptions": {"Bogus": 1}},
         "VolumeOptions.Bogus is not supported by this engine"),
        ({"Type": "bind", "Source": "/", "Target": "/x", "BindOptions": {"Propagation": "up"}},
         "invalid propagation mode: up"),
        ({"Type": "tmpfs", "Target": "/x", "TmpfsOptions": {"Options": [["suid"]]}},
         "invalid option: suid"),
        ({"Type": "volume", "Target": "/x", "Consistency": "cached", "Bogus": 1},
         "Bogus is not supported by this engine"),
    ],
)  # fmt: skip
def test_bad_mounts_get_dockerds_words(spec, words):
    with pytest.raises(InvalidMount) as caught:
        specs.from_mount(spec)
    assert words in str(caught.value)


def test_tmpfs_options_as_dockerd_writes_them():
    mount = specs.from_mount({"Type": "tmpfs", "Target": "/t", "ReadOnly": True,
                              "TmpfsOptions": {"SizeBytes": 3 << 20, "Mode": 0o1777,
                                               "Options": [["exec"]]}})  # fmt: skip
    assert mount.tmpfs_options == "noexec,nosuid,nodev,ro,mode=1777,size=3m,exec"
    assert specs.from_tmpfs("/run", "size=64m").tmpfs_options == "noexec,nosuid,nodev,size=64m"


def test_a_request_keeps_what_was_sent_and_refuses_duplicates():
    host = {"Binds": ["/a:/x"], "Tmpfs": {"/t": ""}, "VolumesFrom": ["other:ro"]}
    request = asked(host, {"/anon": {}})
    assert [w.destination for w in request.wanted] == ["/x", "/t"]
    assert request.volumes_from == (("other", "ro"),) and request.anonymous == ("/anon",)
    assert request.echo["Binds"] == ["/a:/x"] and request.echo["Volumes"] == {"/anon": {}}
    with pytest.raises(InvalidMount, match="Duplicate mount point: /x"):
        asked({"Binds": ["/a:/x"], "Tmpfs": {"/x/": ""}}, None)
    with pytest.raises(InvalidMount, match="invalid mode: rshared"):
        asked({"VolumesFrom": ["c:rshared"]}, None)


def test_shared_paths_from_daemon_json_and_flags(tmp_path):
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"vmctl-shared-paths": ["/Users/me/", "/Volumes"]}')
    loaded = config.load(str(daemon), shared=["/tmp", "/Volumes"])
    assert loaded.shared_paths == ("/Users/me", "/Volumes", "/tmp")
    assert loaded.ignored_keys == ()
    with pytest.raises(AgentError, match="shared path 'rel' must be absolute"):
        config.load(None, shared=["rel"])


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ("C:\\Users\\me\\src:/src", "/c/Users/me/src:/src"),
        ("c:/Users/me/src:/src:ro", "/c/Users/me/src:/src:ro"),
        ("D:\\:/data", "/d:/data"),
        ("C:\\Users\\me\\My Project\\..\\app:/app:ro,z", "/c/Users/me/app:/app:ro,z"),
        ("/c/Users/me/src:/src", "/c/Users/me/src:/src"),  # Git Bash's form: already the VM's
        ("named:/data", "named:/data"),
        ("C:\\Users\\me", "/c/Users/me"),
    ],
)
def test_a_windows_hosts_bind_names_the_folder_where_the_vm_shares_it(sent, seen):
    assert specs.windows_bind(sent) == seen


def test_windows_paths_are_translated_only_when_the_host_is_windows():
    mounts = [{"Type": "bind", "Source": "C:\\Users\\me\\x", "Target": "/x"},
              {"Type": "volume", "Source": "C:", "Target": "/v"}]  # fmt: skip
    host = {"Binds": ["C:\\Users\\me\\src:/src"], "Mounts": mounts}
    translated = asked(host, None, windows=True)
    assert [(w.type, w.source) for w in translated.wanted] == [
        ("bind", "/c/Users/me/src"), ("bind", "/c/Users/me/x"), ("volume", "C:")
    ]  # fmt: skip
    assert translated.echo["Binds"] == ["C:\\Users\\me\\src:/src"], "inspect shows what was sent"
    with pytest.raises(InvalidMount, match="invalid mode: /src"):  # dockerd's, on Linux
        asked({"Binds": ["C:\\Users\\me\\src:/src"]}, None)


def test_the_host_os_key_of_daemon_json(tmp_path):
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"vmctl-host-os": "windows"}')
    assert config.load(str(daemon)).windows_paths and config.load(str(daemon)).ignored_keys == ()
    assert not config.load(None).windows_paths
    daemon.write_text('{"vmctl-host-os": "dos"}')
    with pytest.raises(AgentError, match=r"vmctl-host-os in .* one of linux, macos, windows"):
        config.load(str(daemon))
