"""Serializers of the allocations API: requests, answers and their error bodies.

* ``fields``: ids and examples for the schema, metadata, the levels of a path.
* ``allocations``: allocate, check, release, consume, renew, history.
* ``jobs``: several resources at once (DESIGN §3b).
* ``errors``: the typed error bodies of allocate and admit answers.
"""

from allocations.serializers.allocations import (
    AllocationCheckSerializer,
    AllocationCreateSerializer,
    AllocationGrantSerializer,
    AllocationSerializer,
    CheckResultSerializer,
    ConsumeSerializer,
    HistorySerializer,
    ReleaseSerializer,
    RenewSerializer,
)
from allocations.serializers.errors import (
    ALLOCATE_TOO_MANY_REQUESTS,
    AllocationConflictErrorSerializer,
    QuotaExceededErrorSerializer,
)
from allocations.serializers.fields import (
    ALLOCATION_EXAMPLE,
    ALLOCATION_ID,
    JOB_CONFLICT_EXAMPLE,
    JOB_ID,
    LEVELS_EXAMPLE,
    METADATA_MAX_BYTES,
    ORG_QUOTA_ID,
    OUTSIDE_LEVEL_EXAMPLE,
    QUOTA_EXCEEDED_EXAMPLE,
    REFUSED_LEVELS_EXAMPLE,
    TEAM_QUOTA_ID,
    TTL_MAX_SECONDS,
    USER_QUOTA_ID,
    LevelSerializer,
    LevelsField,
    MetadataField,
    OutsideLevelSerializer,
    UUIDStringField,
)
from allocations.serializers.jobs import (
    ADMIT_TOO_MANY_REQUESTS,
    JobAdmissionSerializer,
    JobAdmitSerializer,
    JobCheckResultSerializer,
    JobCheckSerializer,
    JobConflictErrorSerializer,
    JobRefusedErrorSerializer,
    JobReleaseSerializer,
    JobRenewSerializer,
    JobSerializer,
)

__all__ = [
    "ADMIT_TOO_MANY_REQUESTS",
    "JobAdmissionSerializer",
    "JobAdmitSerializer",
    "JobCheckResultSerializer",
    "JobCheckSerializer",
    "JobConflictErrorSerializer",
    "JobRefusedErrorSerializer",
    "JobReleaseSerializer",
    "JobRenewSerializer",
    "JobSerializer",
    "ALLOCATE_TOO_MANY_REQUESTS",
    "ALLOCATION_EXAMPLE",
    "ALLOCATION_ID",
    "AllocationCheckSerializer",
    "AllocationConflictErrorSerializer",
    "AllocationCreateSerializer",
    "AllocationGrantSerializer",
    "AllocationSerializer",
    "CheckResultSerializer",
    "ConsumeSerializer",
    "HistorySerializer",
    "JOB_CONFLICT_EXAMPLE",
    "JOB_ID",
    "LEVELS_EXAMPLE",
    "LevelSerializer",
    "LevelsField",
    "METADATA_MAX_BYTES",
    "MetadataField",
    "ORG_QUOTA_ID",
    "OUTSIDE_LEVEL_EXAMPLE",
    "OutsideLevelSerializer",
    "QUOTA_EXCEEDED_EXAMPLE",
    "QuotaExceededErrorSerializer",
    "REFUSED_LEVELS_EXAMPLE",
    "ReleaseSerializer",
    "RenewSerializer",
    "TEAM_QUOTA_ID",
    "TTL_MAX_SECONDS",
    "USER_QUOTA_ID",
    "UUIDStringField",
]
