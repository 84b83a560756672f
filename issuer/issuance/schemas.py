"""Request bodies for issuing: one credential, or a batch of them."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, model_validator

from ..validation import Iri, LongText, Name, ShortText

Format = Literal["ldp", "jwt", "both"]
ResultStatus = Literal["Completed", "Enrolled", "Failed", "InProgress", "OnHold", "Provisional", "Withdrew"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientIn(_Strict):
    """An email and a name, or a DID (a name is welcome with it)."""

    email: EmailStr | None = None
    name: Name | None = None
    did: Iri | None = None

    @model_validator(mode="after")
    def _who(self) -> RecipientIn:
        if self.did is not None and not self.did.startswith("did:"):
            raise ValueError("did must be a DID (did:method:…)")
        if self.email is None and self.did is None:
            raise ValueError("a recipient needs an email and a name, or a did")
        if self.email is not None and self.name is None:
            raise ValueError("a recipient with an email needs a name too")
        return self


class ResultIn(_Strict):
    resultDescription: Iri | None = None  # noqa: N815 (OB 3.0 field names)
    value: ShortText | None = None
    status: ResultStatus | None = None
    achievedLevel: Iri | None = None  # noqa: N815


class EvidenceIn(_Strict):
    id: Iri | None = None
    name: Name | None = None
    narrative: LongText | None = None
    description: LongText | None = None
    genre: ShortText | None = None
    audience: ShortText | None = None


class IssueRequest(_Strict):
    achievement_id: str = Field(min_length=1, max_length=64)
    recipient: RecipientIn
    results: list[ResultIn] | None = Field(None, max_length=50)
    evidence: list[EvidenceIn] | None = Field(None, max_length=50)
    valid_until: AwareDatetime | None = None
    format: Format | None = None


class ReissueRequest(_Strict):
    """Re-issue: the same credential, newly signed. `valid_until` renews it (also an expired one). A revoked
    credential cannot come back (its status bit stays set): `replace_revoked` issues a new credential, with a new
    id and status entry, in its place."""

    valid_until: AwareDatetime | None = None
    replace_revoked: bool = False


class RevokeRequest(_Strict):
    reason: LongText = Field(max_length=1000)
