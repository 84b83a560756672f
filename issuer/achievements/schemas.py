"""Request bodies for achievements, in OB 3.0 field names, and the mapping to an OB3 `Achievement` object."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..issuance.rules import AchievementRules
from ..validation import AchievementType, Iri, LongText, Name, ShortText, Slug, Url

ResultType = Literal[
    "GradePointAverage", "LetterGrade", "Percent", "PerformanceLevel", "PredictedScore", "RawScore", "Result",
    "RubricCriterion", "RubricCriterionLevel", "RubricScore", "ScaledScore", "Status",
]  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Criteria(_Strict):
    id: Url | None = None
    narrative: LongText | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Criteria:
        if self.id is None and self.narrative is None:
            raise ValueError("criteria needs a narrative, an id (URL), or both")
        return self


class Image(_Strict):
    id: Url
    caption: ShortText | None = None


class Alignment(_Strict):
    targetName: Name  # noqa: N815 (OB 3.0 field names)
    targetUrl: Url  # noqa: N815
    targetDescription: LongText | None = None  # noqa: N815
    targetFramework: ShortText | None = None  # noqa: N815
    targetCode: ShortText | None = None  # noqa: N815


class ResultDescription(_Strict):
    id: Iri | None = None
    name: Name
    resultType: ResultType  # noqa: N815
    allowedValue: list[ShortText] | None = Field(None, max_length=100)  # noqa: N815
    requiredValue: ShortText | None = None  # noqa: N815
    valueMin: ShortText | None = None  # noqa: N815
    valueMax: ShortText | None = None  # noqa: N815


class AchievementIn(_Strict):
    """POST /api/v1/achievements. `validForDays` and `issuerId` are ours; everything else is OB 3.0."""

    name: Name
    description: LongText
    criteria: Criteria
    image: Url | Image | None = None
    achievementType: AchievementType | None = None  # noqa: N815
    alignment: list[Alignment] | None = Field(None, max_length=50)
    tag: list[ShortText] | None = Field(None, max_length=50)
    resultDescription: list[ResultDescription] | None = Field(None, max_length=50)  # noqa: N815
    validForDays: int | None = Field(None, ge=1, le=36_500)  # noqa: N815
    issuerId: Slug | None = None  # noqa: N815
    rules: AchievementRules | None = None  # issuance rules for LMS completions (ours, not OB 3.0)


class AchievementPatch(_Strict):
    """PATCH /api/v1/achievements/{id}: only the fields given change (null removes an optional one)."""

    name: Name | None = None
    description: LongText | None = None
    criteria: Criteria | None = None
    image: Url | Image | None = None
    achievementType: AchievementType | None = None  # noqa: N815
    alignment: list[Alignment] | None = Field(None, max_length=50)
    tag: list[ShortText] | None = Field(None, max_length=50)
    resultDescription: list[ResultDescription] | None = Field(None, max_length=50)  # noqa: N815
    validForDays: int | None = Field(None, ge=1, le=36_500)  # noqa: N815
    rules: AchievementRules | None = None


def stored_fields(body: AchievementIn | AchievementPatch) -> dict[str, Any]:
    """The OB3 fields as JSON to store (our own fields and unset ones left out)."""
    data = body.model_dump(exclude_unset=True, exclude_none=False, mode="json")
    data.pop("validForDays", None)
    data.pop("issuerId", None)
    data.pop("rules", None)
    return data


def to_ob3(achievement_url: str, fields: dict[str, Any], creator: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OB 3.0 `Achievement` object a credential embeds and `GET /achievements/{id}` serves."""
    ob3: dict[str, Any] = {"id": achievement_url, "type": ["Achievement"], "name": fields["name"]}
    ob3["description"] = fields["description"]
    ob3["criteria"] = {k: v for k, v in fields["criteria"].items() if v is not None}
    image = fields.get("image")
    if isinstance(image, str):
        ob3["image"] = {"id": image, "type": "Image"}
    elif isinstance(image, dict):
        ob3["image"] = {"type": "Image", **{k: v for k, v in image.items() if v is not None}}
    if fields.get("achievementType"):
        ob3["achievementType"] = fields["achievementType"]
    if fields.get("alignment"):
        ob3["alignment"] = [
            {"type": ["Alignment"], **{k: v for k, v in a.items() if v is not None}} for a in fields["alignment"]
        ]
    if fields.get("tag"):
        ob3["tag"] = list(fields["tag"])
    if fields.get("resultDescription"):
        ob3["resultDescription"] = [
            {
                "id": r.get("id") or f"{achievement_url}/results/{i}",
                "type": ["ResultDescription"],
                **{k: v for k, v in r.items() if v is not None and k != "id"},
            }
            for i, r in enumerate(fields["resultDescription"], start=1)
        ]
    if creator is not None:
        ob3["creator"] = creator
    return ob3
