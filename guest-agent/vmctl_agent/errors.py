"""The agent's one exception tree.

    AgentError                      anything the agent reports to a user
    ├── InvalidReference            "invalid reference format: ..."
    ├── RegistryError               talking to a registry failed
    │   ├── RegistryUnreachable     connection refused, DNS, TLS, timeout
    │   ├── AuthenticationError     401/403 after the auth dance
    │   ├── ManifestUnknown         404 on a manifest (unknown repository or tag)
    │   ├── UnsupportedManifest     schema1, unknown media types, zstd layers
    │   └── PlatformNotFound        a manifest list without linux/amd64
    ├── VerificationError           a digest, size or diff_id lied
    ├── UnsafeLayer                 a layer entry would escape its directory
    ├── StoreError                  the local image store
    │   ├── ImageNotFound           no such image
    │   └── ImageConflict           image in use, or ambiguous: needs force
    ├── CgroupError                 creating, joining, killing or removing a container's cgroup
    │   └── ImpossibleLimit         a resource limit the kernel or docker would refuse
    └── VolumeError                 volumes and a container's mounts
        ├── VolumeNotFound          no such volume (or volume plugin)
        ├── VolumeConflict          a volume in use, or a name taken by another driver
        └── InvalidMount            a bad volume name, mount specification or driver option

Each message says what went wrong and, where it helps, what to do next. The API layer maps
ImageNotFound/ManifestUnknown/VolumeNotFound to 404, ImageConflict/VolumeConflict to 409,
InvalidReference, ImpossibleLimit and InvalidMount to 400.
"""


class AgentError(Exception):
    """Base of every error the agent reports to a user."""


class InvalidReference(AgentError):
    pass


class RegistryError(AgentError):
    pass


class RegistryUnreachable(RegistryError):
    pass


class AuthenticationError(RegistryError):
    pass


class ManifestUnknown(RegistryError):
    pass


class UnsupportedManifest(RegistryError):
    pass


class PlatformNotFound(RegistryError):
    pass


class VerificationError(AgentError):
    pass


class UnsafeLayer(AgentError):
    pass


class StoreError(AgentError):
    pass


class ImageNotFound(StoreError):
    pass


class ImageConflict(StoreError):
    pass


class CgroupError(AgentError):
    pass


class ImpossibleLimit(CgroupError):
    pass


class VolumeError(AgentError):
    pass


class VolumeNotFound(VolumeError):
    pass


class VolumeConflict(VolumeError):
    pass


class InvalidMount(VolumeError):
    pass
