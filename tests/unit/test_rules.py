"""The pure issuance rules: each criterion, the precedence of outcomes, and properties over arbitrary inputs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.issuance.rules import AchievementRules, Decline, Hold, Issue, decide
from issuer.webhooks.event import CompletionEvent

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


@pytest.mark.parametrize(
    ("missing_field", "criterion"),
    [("score", "score"), ("time_spent_minutes", "time"), ("attendance_percent", "attendance")],
)
def test_a_data_point_the_platform_did_not_send_goes_to_review(missing_field: str, criterion: str) -> None:
    decision = decide(
        event(**{missing_field: None}),
        rules(minScore=50, minTimeMinutes=10, minAttendancePercent=10),
        held_achievements=(),
        now=NOW,
    )
    assert isinstance(decision, Hold)
    assert statuses(decision)[criterion] == "review"


def test_missing_modules_are_named() -> None:
    decision = decide(
        event(modules_completed=("m1",)), rules(requiredModules=["m1", "m2", "m3"]), held_achievements=(), now=NOW
    )
    assert isinstance(decision, Decline)
    assert "modules not completed: m2, m3" in decision.reason


def test_no_modules_reported_goes_to_review() -> None:
    decision = decide(event(), rules(requiredModules=["m1"]), held_achievements=(), now=NOW)
    assert isinstance(decision, Hold)


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
        modules_completed=tuple(modules),
        email=email,
        name=name,
    ),
    scores,
    minutes,
    percents,
    module_ids,
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
