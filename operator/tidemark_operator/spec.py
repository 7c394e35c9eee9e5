"""The AuroraCluster spec as one pydantic model: the single source of its fields and
defaults on the operator's side (pure). The CRD schema in crds/ carries the same fields,
defaults and bounds (checked by tests/operator/test_operator_unit.py) plus what only the
apiserver enforces (CEL rules: immutability, growth only, URL forms)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# Kubernetes quantity (the apiserver's own pattern for resource quantities)
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
"""int-or-string in the CRD (x-kubernetes-int-or-string)."""
ResourceList = dict[str, int | str]


class _Spec(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown keys ignored (the apiserver
    prunes them anyway); immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True,
                              extra="ignore")


class Volume(_Spec):
    pg_count: int = Field(4, ge=1, le=4096)
    pages_per_pg: int = Field(64, ge=1, le=1048576)
    page_size: int = Field(4096, ge=512, le=65536)


class Storage(_Spec):
    class_name: str | None = None
    size: Quantity = "10Gi"
    ephemeral: bool = False


class Resources(_Spec):
    requests: ResourceList | None = None
    limits: ResourceList | None = None


class Repair(_Spec):
    node_loss_timeout: Annotated[str, StringConstraints(pattern=DURATION_PATTERN)] = "5m"
    max_concurrent_rebuilds: int = Field(2, ge=1, le=64)
    rebuild_bandwidth: Quantity = "50Mi"


class Encryption(_Spec):
    """Backup objects sealed with AES-256-GCM (tidemark_backup.sealed): each Secret's `key`
    entry is one key, mounted into the pods as a file; the first encrypts."""

    key_secret: str | None = None
    previous_key_secrets: tuple[str, ...] = ()  # still decrypt (rotation)

    def secrets(self) -> tuple[str, ...]:
        return ((self.key_secret,) if self.key_secret else ()) + self.previous_key_secrets


class Backup(_Spec):
    enabled: bool = False
    target: str | None = None
    endpoint: str | None = None
    credentials_secret: str | None = None
    retention_days: int = Field(7, ge=1, le=35)
    encryption: Encryption | None = None


class RestoreSource(_Spec):
    cluster: str | None = None
    target: str | None = None
    endpoint: str | None = None
    credentials_secret: str | None = None
    encryption: Encryption | None = None


class Restore(_Spec):
    source: RestoreSource
    point_in_time: str | None = None


ZoneName = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class InstanceTLS(_Spec):
    # Refuse PostgreSQL clients that do not ask for TLS (SQLSTATE 28000), as RDS for
    # PostgreSQL 15+ does by default (rds.force_ssl=1); libpq's default sslmode=prefer asks.
    required: bool = True
    # A kubernetes.io/tls Secret the user keeps (cert-manager's, say) served on the
    # PostgreSQL port instead of the operator's `<name>-instance-tls` (instancetls.py).
    secret_name: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None


class Instances(_Spec):
    """The database instances' pods (`tidemark sql serve`)."""

    tls: InstanceTLS = Field(default_factory=InstanceTLS)

    resources: Resources | None = None
    # A replica whose feed lag exceeds this is taken out of the `-ro` Service (readiness).
    max_lag_ms: int = Field(5000, ge=100, le=3600000)
    # Secret with username/password the instances accept; None: the operator creates
    # `<name>-app` with a generated password.
    credentials_secret: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None


class Network(_Spec):
    """Who may open connections to the cluster's pods (netpolicy.py)."""

    policies: bool = True
    # NetworkPolicyPeers (as the apiserver takes them) allowed on the PostgreSQL port;
    # None: anywhere.
    sql_from: tuple[dict[str, Any], ...] | None = None
    # more peers allowed on the storage port and the instances' admin port (a Prometheus)
    allow_from: tuple[dict[str, Any], ...] = ()


class ClusterSpec(_Spec):
    """AuroraCluster.spec. Objects the CRD defaults to `{}` (volume, storage, repair)
    default to their model with its own defaults, as the apiserver would fill them."""

    zones: Annotated[tuple[ZoneName, ...], Field(min_length=3, max_length=3)] | None = None
    nodes_per_zone: int = Field(2, ge=2, le=64)
    segments_per_zone: Literal[2] = 2
    volume: Volume = Field(default_factory=Volume)
    storage: Storage = Field(default_factory=Storage)
    # None: the operator's own image (`tidemark operator run --image`, set by the chart).
    image: Annotated[str, StringConstraints(min_length=1)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources | None = None
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    repair: Repair = Field(default_factory=Repair)
    backup: Backup | None = None
    restore: Restore | None = None
    # Database instances: 1 writer + (instances - 1) read replicas; 0 = storage only.
    instances: int = Field(2, ge=0, le=16)
    instance: Instances = Field(default_factory=Instances)
    network: Network = Field(default_factory=Network)

    def container_resources(self) -> dict[str, Any]:
        """The storage container's `resources` (as given in the spec)."""
        if self.resources is None:
            return {}
        return self.resources.model_dump(by_alias=True, exclude_none=True)


    def instance_resources(self) -> dict[str, Any]:
        """The instance container's `resources` (as given in spec.instance.resources)."""
        if self.instance.resources is None:
            return {}
        return self.instance.resources.model_dump(by_alias=True, exclude_none=True)


def parse_spec(spec: Any) -> ClusterSpec:
    """The typed spec of an AuroraCluster body's `spec` (None/absent: all defaults)."""
    return ClusterSpec.model_validate(dict(spec or {}))
