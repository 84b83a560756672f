"""Issuance rules, pure: given a completion and an achievement's rules, Issue, Hold (for a person) or Decline.

Nothing here reads a database or a clock: the caller passes what the learner already holds, the emails seen
for this learner before, and `now`, so every decision can be replayed from its stored inputs. Each finding
names the data point it used and says in a sentence what it saw, so a reviewer (or the learner being told what
is missing) reads the same reason the machine acted on.

Where the machine should not be sure, it holds: a score within the review margin of its threshold, a data point
a rule needs that the platform did not report (None: "not reported" is never read as zero or as "none completed";
the reason names the missing data point), too little time on task (time tracking misses offline study), an
identity that looks wrong, or a criterion marked as needing human judgement. It declines only on facts: a failed
assessment, too little attendance, named modules not completed (a reported list without them), a prerequisite
not held.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..validation import ShortText
from ..webhooks.event import CompletionEvent

Status = Literal["met", "review", "unmet"]
CLOCK_SKEW = timedelta(minutes=5)
_CONTROL = {chr(c) for c in [*range(32), 127, 0x2028, 0x2029]}


class AchievementRules(BaseModel):
    """An achievement's rules for LMS completions (`rules` on POST/PATCH /api/v1/achievements, camelCase).

    Every threshold is optional; with none set, a completion with a well-formed name and email issues. A name and
    an email are always required: the credential's recipient has both.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )

    min_score: float | None = Field(None, ge=0, le=100, description="minimum score, percent")
    review_margin: float = Field(
        0, ge=0, le=100, description="a score closer than this (points) to minScore goes to review"
    )
    min_time_minutes: float | None = Field(None, ge=0, le=1_000_000, description="minimum time on task")
    min_attendance_percent: float | None = Field(None, ge=0, le=100)
    required_modules: tuple[ShortText, ...] = Field((), max_length=200, description="module ids, as the LMS names them")
    prerequisites: tuple[ShortText, ...] = Field(
        (), max_length=50, description="achievement ids the learner must already hold"
    )
    human_judgement: tuple[ShortText, ...] = Field(
        (), max_length=50, description="criteria a person judges: every completion goes to review naming them"
    )
    allow_repeat: bool = Field(False, description="a learner may hold several active credentials of this achievement")

    def to_json(self) -> dict[str, Any]:
        """The stored form (camelCase, defaults left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


@dataclass(frozen=True)
class Finding:
    """One criterion checked: what was required, what the event said, and the verdict in a sentence."""

    criterion: str
    status: Status
    detail: str
    observed: Any = None
    required: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "status": self.status,
            "detail": self.detail,
            "observed": self.observed,
            "required": self.required,
        }


@dataclass(frozen=True)
class _Decision:
    findings: tuple[Finding, ...]
    data_points: dict[str, Any] = field(default_factory=dict)
    outcome: ClassVar[str]
    _lead: ClassVar[str]
    _picks: ClassVar[Status]

    @property
    def reasons(self) -> tuple[str, ...]:
        """The sentences that decided it (for Issue: every criterion met)."""
        return tuple(f.detail for f in self.findings if f.status == self._picks)

    @property
    def reason(self) -> str:
        return self._lead + ("; ".join(self.reasons) if self.reasons else "no requirements beyond completion") + "."

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "findings": [f.to_json() for f in self.findings],
            "data_points": self.data_points,
        }


@dataclass(frozen=True)
class Issue(_Decision):
    outcome, _lead, _picks = "issue", "All requirements met: ", "met"


@dataclass(frozen=True)
class Hold(_Decision):
    outcome, _lead, _picks = "hold", "Held for review: ", "review"


@dataclass(frozen=True)
class Decline(_Decision):
    outcome, _lead, _picks = "decline", "Declined: ", "unmet"


Decision = Issue | Hold | Decline


def decide(
    event: CompletionEvent,
    achievement_rules: AchievementRules | None,
    *,
    held_achievements: Collection[str],
    now: datetime,
    known_emails: Collection[str] = (),
    names: Mapping[str, str] | None = None,
) -> Decision:
    """Check every criterion (none short-circuits, so the learner hears everything missing at once).

    `held_achievements`: ids of the achievements the learner holds now (active credentials).
    `known_emails`: the emails earlier credentials for this learner went to; a different one now is a mismatch.
    `names`: achievement id -> name, to name a missing prerequisite in words.
    """
    rules = achievement_rules or AchievementRules()
    findings = [
        *_identity(event, known_emails),
        *_when(event, now),
        *_score(event, rules),
        *_time(event, rules),
        *_attendance(event, rules),
        *_modules(event, rules),
        *_prerequisites(rules, held_achievements, names or {}),
        *_judgement(rules),
    ]
    data_points = {
        "score": event.score,
        "time_spent_minutes": event.time_spent_minutes,
        "attendance_percent": event.attendance_percent,
        "modules_completed": None if event.modules_completed is None else list(event.modules_completed),
        "completed_at": event.completed_at.isoformat(),
        "email_present": bool(event.email),
        "name_present": bool(event.name),
        "held_achievements": sorted(held_achievements),
    }
    verdicts = {f.status for f in findings}
    if "unmet" in verdicts:
        return Decline(tuple(findings), data_points)
    if "review" in verdicts:
        return Hold(tuple(findings), data_points)
    return Issue(tuple(findings), data_points)


# --------------------------------------------------------------------------------------------- criteria


def _identity(event: CompletionEvent, known: Collection[str]) -> list[Finding]:
    found: list[Finding] = []
    email = (event.email or "").strip()
    if not email:
        found.append(Finding("email", "review", "the platform sent no email address for the learner"))
    elif (problem := email_problem(email)) is not None:
        found.append(Finding("email", "review", f"the learner's email {email!r} is not well-formed: {problem}", email))
    else:
        known_set = {k.strip().lower() for k in known}
        if known_set and email.lower() not in known_set:
            earlier = ", ".join(sorted(known_set))
            found.append(
                Finding(
                    "email",
                    "review",
                    f"learner data mismatch: the LMS now gives {email} for this learner, earlier credentials went to "
                    f"{earlier}",
                    email,
                    sorted(known_set),
                )
            )
        else:
            found.append(Finding("email", "met", "the email address is well-formed", email))
    name = (event.name or "").strip()
    if not name:
        found.append(Finding("name", "review", "the platform sent no name for the learner"))
    elif (problem := name_problem(name)) is not None:
        found.append(Finding("name", "review", f"the learner's name {name!r} looks wrong: {problem}", name))
    else:
        found.append(Finding("name", "met", "the name is present", name))
    if event.extra.get("confirmed") is False:
        found.append(Finding("confirmed", "review", "the LMS's own API does not confirm this completion", False))
    return found


def email_problem(email: str) -> str | None:
    """Why `email` cannot receive a credential, or None (syntax only: no DNS, this module stays pure)."""
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        return str(error)
    return None


def name_problem(name: str) -> str | None:
    if len(name) > 500:
        return "longer than 500 characters"
    if any(c in _CONTROL for c in name):
        return "it contains control characters"
    if "@" in name:
        return "it looks like an email address, not a person's name"
    return None


def _when(event: CompletionEvent, now: datetime) -> list[Finding]:
    if event.completed_at > now + CLOCK_SKEW:
        return [
            Finding(
                "completed_at",
                "review",
                f"the completion time {event.completed_at.isoformat()} is in the future",
                event.completed_at.isoformat(),
            )
        ]
    return []


def _score(event: CompletionEvent, rules: AchievementRules) -> list[Finding]:
    need = rules.min_score
    if need is None:
        return []
    got = event.score
    if got is None:
        return [_not_reported("score", f"the score (at least {_n(need)} is required)", need)]
    if abs(got - need) < rules.review_margin:
        side = "just above" if got >= need else "just below"
        return [
            Finding(
                "score",
                "review",
                f"the score {_n(got)} is {side} the minimum {_n(need)} (within the review margin of "
                f"{_n(rules.review_margin)})",
                got,
                need,
            )
        ]
    if got < need:
        return [Finding("score", "unmet", f"failed assessment: score {_n(got)}, at least {_n(need)} needed", got, need)]
    return [Finding("score", "met", f"score {_n(got)} (at least {_n(need)})", got, need)]


def _time(event: CompletionEvent, rules: AchievementRules) -> list[Finding]:
    need = rules.min_time_minutes
    if need is None:
        return []
    got = event.time_spent_minutes
    if got is None:
        return [_not_reported("time", f"the time on task (at least {_n(need)} minutes are required)", need)]
    if got < need:
        return [
            Finding(
                "time",
                "review",
                f"time threshold missed: {_n(got)} minutes on task, {_n(need)} expected",
                got,
                need,
            )
        ]
    return [Finding("time", "met", f"{_n(got)} minutes on task (at least {_n(need)})", got, need)]


def _attendance(event: CompletionEvent, rules: AchievementRules) -> list[Finding]:
    need = rules.min_attendance_percent
    if need is None:
        return []
    got = event.attendance_percent
    if got is None:
        return [_not_reported("attendance", f"the attendance (at least {_n(need)}% is required)", need)]
    if got < need:
        return [Finding("attendance", "unmet", f"attendance {_n(got)}%, at least {_n(need)}% needed", got, need)]
    return [Finding("attendance", "met", f"attendance {_n(got)}% (at least {_n(need)}%)", got, need)]


def _modules(event: CompletionEvent, rules: AchievementRules) -> list[Finding]:
    required = list(dict.fromkeys(rules.required_modules))
    if not required:
        return []
    if event.modules_completed is None:
        return [_not_reported("modules", f"which modules were completed (required: {', '.join(required)})", required)]
    done = set(event.modules_completed)  # reported, possibly empty: an empty list means none was completed
    missing = [m for m in required if m not in done]
    if missing:
        return [Finding("modules", "unmet", f"modules not completed: {', '.join(missing)}", sorted(done), required)]
    return [Finding("modules", "met", f"all {len(required)} required modules completed", sorted(done), required)]


def _prerequisites(rules: AchievementRules, held: Collection[str], names: Mapping[str, str]) -> list[Finding]:
    required = list(dict.fromkeys(rules.prerequisites))
    if not required:
        return []
    missing = [p for p in required if p not in held]
    if missing:
        named = ", ".join(f"{names[p]!r} ({p})" if p in names else p for p in missing)
        return [Finding("prerequisites", "unmet", f"prerequisite not held: {named}", sorted(held), required)]
    return [Finding("prerequisites", "met", f"all {len(required)} prerequisites held", sorted(held), required)]


def _judgement(rules: AchievementRules) -> list[Finding]:
    if not rules.human_judgement:
        return []
    criteria = "; ".join(rules.human_judgement)
    return [Finding("judgement", "review", f"needs human judgement: {criteria}", None, list(rules.human_judgement))]


def _not_reported(criterion: str, what: str, required: Any) -> Finding:
    """A rule needs a data point the platform did not report: a person decides, told which one is missing."""
    return Finding(criterion, "review", f"not reported by the platform: {what}", None, required)


def _n(value: float) -> str:
    """70.0 -> '70', 69.5 -> '69.5': numbers as a person writes them."""
    return f"{value:g}"
