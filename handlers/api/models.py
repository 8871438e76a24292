"""The pipeline API's request and response bodies, as pydantic models.

flask-openapi3 validates requests against these and builds `/api/v1/openapi.json` from them,
so the document and the checks can never disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from rollout.config import validate_steps
from rollout.durations import parse_duration
from rollout.model import Phase, Rollout
from rollout.wording import unquote


def _interval(text: str) -> str:
    if parse_duration(text) < timedelta(seconds=1):
        raise ValueError("must be at least 1s, like 30m")
    return text


def _steps(steps: list[int]) -> list[int]:
    return list(validate_steps(tuple(steps)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineContext(_Strict):
    """What the pipeline says of itself; shown on the rollout's card."""

    commit: str | None = Field(None, max_length=100, examples=["1a2b3c4d"])
    pipeline_url: str | None = Field(
        None,
        max_length=500,
        pattern=r"^https?://[^\s<>|]+$",
        examples=["https://github.com/acme/shop/actions/runs/42"],
    )
    triggered_by: str | None = Field(None, max_length=100, examples=["alice"])


class StartBody(_Strict):
    service: str = Field(max_length=63, examples=["checkout"])
    image: str = Field(
        min_length=1, max_length=500, examples=["v2.3.5", "registry/shop/checkout:v2.3.5"]
    )
    steps: Annotated[list[int], AfterValidator(_steps)] | None = Field(
        None, max_length=20, description="canary weights in percent, rising (an override)"
    )
    interval: Annotated[str, AfterValidator(_interval)] | None = Field(
        None, max_length=20, description="time per step, like 30m (an override)"
    )
    expected_digest: str | None = Field(
        None, pattern=r"^sha256:[0-9a-f]{64}$", description="the digest the pipeline built"
    )
    context: PipelineContext = Field(default_factory=PipelineContext)


class StartHeaders(BaseModel):
    """`Idempotency-Key`: a retry of the same request (same key, same body) starts nothing new
    and answers with the rollout the first one started."""

    idempotency_key: str | None = Field(None, alias="Idempotency-Key", min_length=1, max_length=200)


class RollbackBody(_Strict):
    reason: str | None = Field(None, max_length=500)


class ListQuery(_Strict):
    service: str | None = Field(None, max_length=63)
    phase: Phase | None = None
    limit: int = Field(20, ge=1, le=100)


class RolloutPath(_Strict):
    rollout_id: str = Field(max_length=100)


class RolloutOut(BaseModel):
    """A rollout as a pipeline sees it: enough to follow it step by step."""

    id: str
    service: str
    phase: Phase
    done: bool = Field(description="true once the phase is final (succeeded or rolled back)")
    stable_image: str
    canary_image: str
    weight: float
    step: int = Field(description="1-based index of the current step; 0 before the first")
    step_ready: bool = Field(description="the step's weight is in effect and the canary ready")
    steps: list[int]
    verdict: str | None
    approval_requested: bool
    approvals_required: int
    approvals: list[str]
    rejected_by: str | None
    reason: str | None
    breach: str | None = Field(description="the rule breached, with the measured value")
    started_by: str
    pipeline: dict[str, str]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, rollout: Rollout) -> RolloutOut:
        return cls(
            id=rollout.id,
            service=rollout.service,
            phase=rollout.phase,
            done=rollout.phase.is_terminal,
            stable_image=rollout.stable_image,
            canary_image=rollout.canary_image,
            weight=rollout.weight,
            step=rollout.step_index + 1,
            step_ready=rollout.step_ready,
            steps=list(rollout.plan.steps),
            verdict=rollout.verdict,
            approval_requested=rollout.approval_requested_at is not None,
            approvals_required=rollout.plan.approvals_required,
            approvals=list(rollout.approvals),
            rejected_by=rollout.rejected_by,
            reason=unquote(rollout.reason) if rollout.reason else None,
            breach=rollout.breach,
            started_by=rollout.started_by,
            pipeline=dict(rollout.pipeline),
            created_at=rollout.created_at,
            updated_at=rollout.updated_at,
            finished_at=rollout.finished_at,
        )


class RolloutList(BaseModel):
    rollouts: list[RolloutOut]


class ErrorDetail(BaseModel):
    code: str = Field(examples=["active_rollout"])
    message: str = Field(description="what is wrong and how to fix it")


class ErrorOut(BaseModel):
    error: ErrorDetail
