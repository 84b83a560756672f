"""Field types for request bodies: text without control characters, absolute URLs, OB3 vocabularies.

Untrusted text is stored as given (after trimming) and escaped wherever it is shown; what is refused here is what
no person types: control characters, which also break N-Quads canonicalization in some JSON-LD processors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_ABSOLUTE_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)
_ABSOLUTE_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")

ACHIEVEMENT_TYPES = frozenset(
    [
        "Achievement",
        "ApprenticeshipCertificate",
        "Assessment",
        "Assignment",
        "AssociateDegree",
        "Award",
        "Badge",
        "BachelorDegree",
        "Certificate",
        "CertificateOfCompletion",
        "Certification",
        "CommunityService",
        "Competency",
        "Course",
        "CoCurricular",
        "Degree",
        "Diploma",
        "DoctoralDegree",
        "Fieldwork",
        "GeneralEducationDevelopment",
        "JourneymanCertificate",
        "LearningProgram",
        "License",
        "Membership",
        "ProfessionalDoctorate",
        "QualityAssuranceCredential",
        "MasterCertificate",
        "MasterDegree",
        "MicroCredential",
        "ResearchDoctorate",
        "SecondarySchoolDiploma",
    ]
)
_EXT_TYPE = re.compile(r"^ext:[A-Za-z0-9.\-_|]+$")


def _line(value: str) -> str:
    value = value.strip()
    if _CONTROL_OR_NEWLINE.search(value):
        raise ValueError("must be a single line without control characters")
    return value


def _block(value: str) -> str:
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _url(value: str) -> str:
    value = value.strip()
    if not _ABSOLUTE_URL.match(value):
        raise ValueError("must be an absolute http(s) URL")
    return value


def _iri(value: str) -> str:
    value = value.strip()
    if not _ABSOLUTE_IRI.match(value) or value.startswith("_:"):
        raise ValueError("must be an absolute IRI (e.g. https://…, urn:…, did:…)")
    return value


def _achievement_type(value: str) -> str:
    if value not in ACHIEVEMENT_TYPES and not _EXT_TYPE.match(value):
        raise ValueError("must be an OB 3.0 achievement type (e.g. Badge, Certificate, Course) or ext:YourType")
    return value


def _not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, BeforeValidator(_not_blank), AfterValidator(_line), Field(min_length=1, max_length=500)]
ShortText = Annotated[str, AfterValidator(_line), Field(max_length=500)]
LongText = Annotated[str, BeforeValidator(_not_blank), AfterValidator(_block), Field(min_length=1, max_length=20_000)]
Url = Annotated[str, AfterValidator(_url), Field(max_length=2000)]
Iri = Annotated[str, AfterValidator(_iri), Field(max_length=2000)]
AchievementType = Annotated[str, AfterValidator(_achievement_type)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
