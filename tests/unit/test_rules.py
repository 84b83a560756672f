"""The pure issuance rules: each criterion, the precedence of outcomes, and properties over arbitrary inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.issuance.rules import AchievementRules, Decline, Hold, Issue, decide
from issuer.webhooks.adapters import Inbound, Source, registry
from issuer.webhooks.event import CompletionEvent
from tests.integration.lms_payloads import PLATFORMS, Delivery, Learner, deliver, source_body

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def event(**changes: Any) -> CompletionEvent:
    base = CompletionEvent(
        source_id="lms",
        platform="generic",
        external_id="evt-1",
        learner_id="42",
        course_id="py101",
        completed_at=NOW - timedelta(minutes=3),
        email="ada@example.org",
        name="Ada Lovelace",
    )
    return replace(base, **changes)


def rules(**values: Any) -> AchievementRules:
    return AchievementRules.model_validate(values)


def statuses(decision: Issue | Hold | Decline) -> dict[str, str]:
    return {f.criterion: f.status for f in decision.findings}


def test_no_rules_and_a_good_identity_issue() -> None:
    decision = decide(event(), None, held_achievements=(), now=NOW)
    assert isinstance(decision, Issue)
    assert decision.reason.startswith("All requirements met")
    assert decision.to_json()["outcome"] == "issue"


def test_all_requirements_met_issue_naming_each() -> None:
    decision = decide(
        event(score=91, time_spent_minutes=300, attendance_percent=100, modules_completed=("m1", "m2", "m3")),
        rules(
            minScore=70,
            reviewMargin=3,
            minTimeMinutes=240,
            minAttendancePercent=80,
            requiredModules=["m1", "m2"],
            prerequisites=["intro"],
        ),
        held_achievements={"intro"},
        now=NOW,
    )
    assert isinstance(decision, Issue)
    assert statuses(decision) == {
        "email": "met",
        "name": "met",
        "score": "met",
        "time": "met",
        "attendance": "met",
        "modules": "met",
        "prerequisites": "met",
    }
    assert "score 91 (at least 70)" in decision.reason
    assert decision.data_points["score"] == 91


def test_failed_assessment_declines_with_the_numbers() -> None:
    decision = decide(event(score=45), rules(minScore=70, reviewMargin=5), held_achievements=(), now=NOW)
    assert isinstance(decision, Decline)
    assert decision.reason == "Declined: failed assessment: score 45, at least 70 needed."


@pytest.mark.parametrize("score", [66, 69.5, 70, 73])
def test_a_score_within_the_margin_goes_to_review(score: float) -> None:
    decision = decide(event(score=score), rules(minScore=70, reviewMargin=4.5), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold), decision.reason
    assert "within the review margin" in decision.reason


def test_margin_zero_decides_at_the_threshold() -> None:
    assert isinstance(decide(event(score=70), rules(minScore=70), held_achievements=(), now=NOW), Issue)
    assert isinstance(decide(event(score=69.99), rules(minScore=70), held_achievements=(), now=NOW), Decline)


def test_time_threshold_missed_is_held_not_declined() -> None:
    decision = decide(event(time_spent_minutes=50), rules(minTimeMinutes=120), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)
    assert decision.reasons == ("time threshold missed: 50 minutes on task, 120 expected",)


def test_attendance_below_minimum_declines() -> None:
    decision = decide(event(attendance_percent=60), rules(minAttendancePercent=75), held_achievements=(), now=NOW)
    assert isinstance(decision, Decline)
    assert "attendance 60%, at least 75% needed" in decision.reason


REPORTED = {"score": 80.0, "time_spent_minutes": 60.0, "attendance_percent": 90.0, "modules_completed": ("m1",)}
ALL_RULES = {"minScore": 50, "minTimeMinutes": 10, "minAttendancePercent": 10, "requiredModules": ["m1"]}


@pytest.mark.parametrize(
    ("missing_field", "criterion", "named"),
    [
        ("score", "score", "not reported by the platform: the score (at least 50 is required)"),
        ("time_spent_minutes", "time", "not reported by the platform: the time on task (at least 10 minutes"),
        ("attendance_percent", "attendance", "not reported by the platform: the attendance (at least 10%"),
        ("modules_completed", "modules", "not reported by the platform: which modules were completed (required: m1)"),
    ],
)
def test_a_data_point_the_platform_did_not_report_goes_to_review_naming_it(
    missing_field: str, criterion: str, named: str
) -> None:
    decision = decide(event(**{**REPORTED, missing_field: None}), rules(**ALL_RULES), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)
    assert statuses(decision) == {
        "email": "met",
        "name": "met",
        "score": "met",
        "time": "met",
        "attendance": "met",
        "modules": "met",
    } | {criterion: "review"}
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith(named)
    assert decision.reason.startswith(f"Held for review: {named}")
    assert decision.data_points[missing_field] is None


@pytest.mark.parametrize(
    ("reported", "criterion", "status", "words"),
    [
        ({"score": 0.0}, "score", "unmet", "failed assessment: score 0, at least 50 needed"),
        ({"attendance_percent": 0.0}, "attendance", "unmet", "attendance 0%, at least 10% needed"),
        ({"modules_completed": ()}, "modules", "unmet", "modules not completed: m1"),
        ({"time_spent_minutes": 0.0}, "time", "review", "time threshold missed: 0 minutes on task, 10 expected"),
    ],
)
def test_zero_or_empty_is_a_reported_value_decided_on_its_merits(
    reported: dict[str, Any], criterion: str, status: str, words: str
) -> None:
    """Zero and empty are what the platform said: decided as facts, never mistaken for "not reported"."""
    decision = decide(event(**{**REPORTED, **reported}), rules(**ALL_RULES), held_achievements=(), now=NOW)
    assert statuses(decision)[criterion] == status
    assert type(decision) is (Decline if status == "unmet" else Hold)
    assert decision.reasons == (words,)
    assert "not reported" not in decision.reason


def test_not_reported_never_declines_on_its_own() -> None:
    """A completion that meets every reported criterion is held, never declined, whatever else is missing."""
    decision = decide(event(), rules(**ALL_RULES), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)
    held = [f for f in decision.findings if f.status == "review"]
    assert [f.criterion for f in held] == ["score", "time", "attendance", "modules"]
    assert all(f.detail.startswith("not reported by the platform: ") for f in held)


def test_missing_modules_are_named() -> None:
    decision = decide(
        event(modules_completed=("m1",)), rules(requiredModules=["m1", "m2", "m3"]), held_achievements=(), now=NOW
    )
    assert isinstance(decision, Decline)
    assert "modules not completed: m2, m3" in decision.reason


def test_no_modules_reported_goes_to_review_and_an_empty_list_declines() -> None:
    held = decide(event(), rules(requiredModules=["m1"]), held_achievements=(), now=NOW)
    assert isinstance(held, Hold)
    assert held.reasons == ("not reported by the platform: which modules were completed (required: m1)",)
    declined = decide(event(modules_completed=()), rules(requiredModules=["m1"]), held_achievements=(), now=NOW)
    assert isinstance(declined, Decline)
    assert declined.reasons == ("modules not completed: m1",)


def test_the_event_keeps_not_reported_apart_from_empty_in_its_stored_form() -> None:
    for modules in (None, (), ("m1", "m2")):
        stored = event(modules_completed=modules).to_json()
        assert stored["modules_completed"] == (None if modules is None else list(modules))
        assert CompletionEvent.from_json(stored).modules_completed == modules


def test_prerequisite_missing_declines_naming_the_gap() -> None:
    decision = decide(
        event(),
        rules(prerequisites=["intro", "safety"]),
        held_achievements={"intro"},
        now=NOW,
        names={"safety": "Welding Safety"},
    )
    assert isinstance(decision, Decline)
    assert decision.reasons == ("prerequisite not held: 'Welding Safety' (safety)",)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"email": None}, "no email address"),
        ({"email": "not-an-email"}, "not well-formed"),
        ({"name": None}, "no name"),
        ({"name": "  "}, "no name"),
        ({"name": "ada@example.org"}, "looks like an email address"),
        ({"name": "Ada\x00Lovelace"}, "control characters"),
        ({"completed_at": NOW + timedelta(hours=2)}, "in the future"),
        ({"extra": {"confirmed": False}}, "does not confirm"),
    ],
)
def test_identity_and_data_problems_are_held(changes: dict[str, Any], words: str) -> None:
    decision = decide(event(**changes), None, held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)
    assert words in decision.reason


def test_learner_data_mismatch_is_held() -> None:
    decision = decide(
        event(email="ada@new.example"), None, held_achievements=(), now=NOW, known_emails={"ada@example.org"}
    )
    assert isinstance(decision, Hold)
    assert "learner data mismatch" in decision.reason
    same = decide(event(email="ADA@example.org"), None, held_achievements=(), now=NOW, known_emails={"ada@example.org"})
    assert isinstance(same, Issue)


def test_human_judgement_always_goes_to_review() -> None:
    decision = decide(event(score=100), rules(humanJudgement=["portfolio quality"]), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)
    assert decision.reason == "Held for review: needs human judgement: portfolio quality."


def test_decline_wins_over_hold_and_every_gap_is_told() -> None:
    decision = decide(
        event(score=10, email=None, time_spent_minutes=1),
        rules(minScore=70, minTimeMinutes=60, prerequisites=["intro"]),
        held_achievements=(),
        now=NOW,
    )
    assert isinstance(decision, Decline)
    assert [f.criterion for f in decision.findings if f.status == "unmet"] == ["score", "prerequisites"]
    assert {"email", "time"} <= {f.criterion for f in decision.findings if f.status == "review"}


def test_rules_round_trip_in_camel_case_and_refuse_unknown_fields() -> None:
    parsed = rules(minScore=70, allowRepeat=True, requiredModules=["a"])
    assert parsed.to_json() == {"minScore": 70.0, "allowRepeat": True, "requiredModules": ["a"]}
    assert AchievementRules.model_validate(parsed.to_json()) == parsed
    with pytest.raises(ValueError, match="extra"):
        rules(minscore=70)
    with pytest.raises(ValueError, match="less than or equal to 100"):
        rules(minScore=101)


# --------------------------------------------------------------------------------------------- properties

scores = st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)
minutes = st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False)
percents = st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)
module_ids = st.lists(st.sampled_from(["m1", "m2", "m3", "m4"]), max_size=4, unique=True)
reported_modules = st.none() | module_ids.map(tuple)
rule_sets = st.builds(
    AchievementRules,
    min_score=scores,
    review_margin=st.floats(min_value=0, max_value=20, allow_nan=False),
    min_time_minutes=minutes,
    min_attendance_percent=percents,
    required_modules=module_ids.map(tuple),
    prerequisites=st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True).map(tuple),
    human_judgement=st.lists(st.sampled_from(["essay", "portfolio"]), max_size=1).map(tuple),
)
events = st.builds(
    lambda score, time, attendance, modules, email, name: event(
        score=score,
        time_spent_minutes=time,
        attendance_percent=attendance,
        modules_completed=modules,
        email=email,
        name=name,
    ),
    scores,
    minutes,
    percents,
    reported_modules,
    st.sampled_from([None, "", "ada@example.org", "bad@", "x@y.org"]),
    st.sampled_from([None, "", "Ada Lovelace", "a@b.c", "李 王"]),
)
held_sets = st.sets(st.sampled_from(["a", "b", "c"]))


@settings(max_examples=300, deadline=None)
@given(events, rule_sets, held_sets)
def test_outcome_follows_the_findings(e: CompletionEvent, r: AchievementRules, held: set[str]) -> None:
    decision = decide(e, r, held_achievements=held, now=NOW)
    verdicts = {f.status for f in decision.findings}
    expected = Decline if "unmet" in verdicts else Hold if "review" in verdicts else Issue
    assert type(decision) is expected
    assert decision.reason.endswith(".") and len(decision.reason) > 20
    assert decision == decide(e, r, held_achievements=held, now=NOW)  # pure: same inputs, same decision
    if not isinstance(decision, Issue):
        assert decision.reasons, "a hold or a decline always says why"
    assert decision.to_json()["findings"]
    reported = {
        "score": e.score,
        "time": e.time_spent_minutes,
        "attendance": e.attendance_percent,
        "modules": e.modules_completed,
    }
    for finding in decision.findings:
        if finding.criterion not in reported:
            continue
        if reported[finding.criterion] is None:  # not reported: always a person's call, and said so
            assert finding.status == "review"
            assert finding.detail.startswith("not reported by the platform: ")
        else:
            assert not finding.detail.startswith("not reported")


@settings(max_examples=300, deadline=None)
@given(events, rule_sets, held_sets, st.floats(min_value=0, max_value=100, allow_nan=False))
def test_a_higher_score_never_makes_the_outcome_worse(
    e: CompletionEvent, r: AchievementRules, held: set[str], bump: float
) -> None:
    rank = {Decline: 0, Hold: 1, Issue: 2}
    if e.score is None:
        return
    better = replace(e, score=min(100.0, e.score + bump))
    before, after = decide(e, r, held_achievements=held, now=NOW), decide(better, r, held_achievements=held, now=NOW)
    score_before = {f.criterion: f.status for f in before.findings}.get("score")
    score_after = {f.criterion: f.status for f in after.findings}.get("score")
    order = {"unmet": 0, "review": 1, "met": 2, None: 2}
    if order[score_after] >= order[score_before]:
        assert rank[type(after)] >= rank[type(before)]


@settings(max_examples=200, deadline=None)
@given(rule_sets, held_sets)
def test_holding_more_prerequisites_never_adds_a_gap(r: AchievementRules, held: set[str]) -> None:
    fewer = decide(event(), r, held_achievements=held, now=NOW)
    more = decide(event(), r, held_achievements=held | {"a", "b", "c"}, now=NOW)
    assert not any(f.criterion == "prerequisites" and f.status == "unmet" for f in more.findings)
    if not any(f.criterion == "prerequisites" and f.status == "unmet" for f in fewer.findings):
        assert type(fewer) is type(more)


# --------------------------------------------------------------------------------------------- per adapter

NOT_REPORTED_BY = {  # what each platform's completion never carries (integrations.md section 3)
    "moodle": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),
    "canvas": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),
    "teachable": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),
    "thinkific": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),
    "docebo": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),
    "openedx": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),  # passing status
    "generic": ("score", "time_spent_minutes", "attendance_percent", "modules_completed"),  # fields left out
}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_adapter_leaves_what_its_platform_does_not_send_as_none(platform: str) -> None:
    """Not zero, not empty: None. With rules needing them all, the completion is held naming each, not declined."""
    who = Learner()
    inbound = _inbound(deliver(platform, who))
    parsed = registry()[platform].receive(inbound, _source(platform), who.at)
    (completion,) = parsed.events
    for name in NOT_REPORTED_BY[platform]:
        assert getattr(completion, name) is None, name
    decision = decide(completion, rules(**ALL_RULES), held_achievements=(), now=who.at)
    assert isinstance(decision, Hold), decision.reason
    review = {f.criterion: f.detail for f in decision.findings if f.status == "review"}
    assert {"score", "time", "attendance", "modules"} <= set(review)
    for criterion in ("score", "time", "attendance", "modules"):
        assert review[criterion].startswith("not reported by the platform: ")


def test_the_generic_adapter_keeps_null_apart_from_empty_and_zero() -> None:
    who = Learner(score=0, time_spent_minutes=0, attendance_percent=0, modules=())
    completion = registry()["generic"].receive(_inbound(deliver("generic", who)), _source("generic"), who.at).events[0]
    assert (completion.score, completion.time_spent_minutes, completion.attendance_percent) == (0, 0, 0)
    assert completion.modules_completed == ()
    declined = decide(completion, rules(**ALL_RULES), held_achievements=(), now=who.at)
    assert isinstance(declined, Decline)
    assert statuses(declined) == {
        "email": "met",
        "name": "met",
        "score": "unmet",
        "time": "review",  # too little time on task is held (offline study is not tracked), reported or not
        "attendance": "unmet",
        "modules": "unmet",
    }
    explicit_null = Learner(modules=None)
    body = deliver("generic", explicit_null).body.replace(b'"completed_at"', b'"modules_completed":null,"completed_at"')
    signed = deliver("generic", explicit_null, raw=body)
    again = registry()["generic"].receive(_inbound(signed), _source("generic"), explicit_null.at).events[0]
    assert again.modules_completed is None


def _inbound(delivery: Delivery) -> Inbound:
    query = dict(parse_qsl(delivery.query.removeprefix("?")))
    return Inbound(delivery.body, {k.lower(): v for k, v in delivery.headers.items()}, query)


def _source(platform: str) -> Source:
    body = source_body(platform, f"{platform}-src")
    return Source(
        id=body["id"], platform=platform, config=body["config"], secrets=tuple(body["secrets"]), signing_secrets=()
    )
