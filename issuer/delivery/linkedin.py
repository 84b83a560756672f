"""LinkedIn's "Add to profile" link for a certification (a plain URL: no API, no token, no JavaScript)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, urlencode

ADD_TO_PROFILE = "https://www.linkedin.com/profile/add"


def add_to_profile_url(
    *,
    name: str,
    organization: str,
    issued: datetime,
    cert_url: str,
    cert_id: str,
    expires: datetime | None = None,
    organization_id: int | None = None,
) -> str:
    """The pre-filled "Add licence or certification" form. Dates are given as year and month (UTC), as LinkedIn
    asks; `organization_id` (LinkedIn's numeric company id) links the issuer's page instead of a plain name."""
    for moment in (issued, expires):
        if moment is not None and moment.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
    params: list[tuple[str, str]] = [("startTask", "CERTIFICATION_NAME"), ("name", name)]
    if organization_id is not None:
        params.append(("organizationId", str(organization_id)))
    else:
        params.append(("organizationName", organization))
    issued_utc = issued.astimezone(UTC)
    params += [("issueYear", str(issued_utc.year)), ("issueMonth", str(issued_utc.month))]
    if expires is not None:
        expires_utc = expires.astimezone(UTC)
        params += [("expirationYear", str(expires_utc.year)), ("expirationMonth", str(expires_utc.month))]
    params += [("certUrl", cert_url), ("certId", cert_id)]
    return f"{ADD_TO_PROFILE}?{urlencode(params, quote_via=quote)}"
