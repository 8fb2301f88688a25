"""A calendar: events with a title, a date and a start/end time; no two events on a day may overlap."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from envs.tool_calling.domain import DATE, TIME, Domain, ToolError, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact

EVENT_ID = {"type": "string", "description": "An event id such as evt-3"}
EVENT = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "date": DATE, "start": TIME, "end": TIME},
    "required": ["title", "date", "start", "end"],
    "additionalProperties": False,
}


def minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def hhmm(total: int) -> str:
    return f"{total // 60:02d}:{total % 60:02d}"


class Calendar(Domain):
    name = "calendar"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {"events": {"type": "object", "additionalProperties": EVENT},
                       "next_id": {"type": "integer", "minimum": 1}},
        "required": ["events", "next_id"],
        "additionalProperties": False,
    }

    @property
    def events(self) -> dict[str, dict[str, str]]:
        return self.state["events"]

    def _checked_slot(self, date: str, start: str, end: str, ignore: str | None = None) -> None:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ToolError(f"not a real date: {date}") from None
        if minutes(end) <= minutes(start):
            raise ToolError(f"end {end} must be after start {start}")
        for event_id, ev in self.events.items():
            if event_id != ignore and ev["date"] == date and minutes(ev["start"]) < minutes(end) \
                    and minutes(start) < minutes(ev["end"]):
                raise ToolError(f"conflicts with {event_id} '{ev['title']}' ({ev['start']}-{ev['end']})")

    def _existing(self, event_id: str) -> dict[str, str]:
        if event_id not in self.events:
            raise ToolError(f"no such event: {event_id}")
        return self.events[event_id]

    @tool("List the events on a date, earliest first.", {"date": DATE}, ["date"])
    def list_events(self, date: str) -> dict[str, Any]:
        found = [{"event_id": i, **ev} for i, ev in self.events.items() if ev["date"] == date]
        return {"date": date, "events": sorted(found, key=lambda ev: ev["start"])}

    @tool("Find events whose title contains a text (case-insensitive), on any date.",
          {"text": {"type": "string", "minLength": 1}}, ["text"])
    def search_events(self, text: str) -> dict[str, Any]:
        found = [{"event_id": i, **ev} for i, ev in self.events.items() if text.lower() in ev["title"].lower()]
        return {"events": sorted(found, key=lambda ev: (ev["date"], ev["start"]))}

    @tool("Create an event. Fails if it overlaps another event that day.",
          {"title": {"type": "string", "minLength": 1}, "date": DATE, "start": TIME, "end": TIME},
          ["title", "date", "start", "end"])
    def create_event(self, title: str, date: str, start: str, end: str) -> dict[str, Any]:
        self._checked_slot(date, start, end)
        event_id = f"evt-{self.state['next_id']}"
        self.state["next_id"] += 1
        self.events[event_id] = {"title": title, "date": date, "start": start, "end": end}
        return {"event_id": event_id, **self.events[event_id]}

    @tool("Cancel (delete) an event.", {"event_id": EVENT_ID}, ["event_id"])
    def cancel_event(self, event_id: str) -> dict[str, Any]:
        ev = self._existing(event_id)
        del self.events[event_id]
        return {"cancelled": event_id, "title": ev["title"]}

    @tool("Move an event to a new date and time.", {"event_id": EVENT_ID, "date": DATE, "start": TIME, "end": TIME},
          ["event_id", "date", "start", "end"])
    def reschedule_event(self, event_id: str, date: str, start: str, end: str) -> dict[str, Any]:
        ev = self._existing(event_id)
        self._checked_slot(date, start, end, ignore=event_id)
        ev.update(date=date, start=start, end=end)
        return {"event_id": event_id, **ev}

    def snapshot(self) -> Any:
        # Ids are handles, not content: two calendars with the same events are the same calendar.
        return sorted((ev["title"], ev["date"], ev["start"], ev["end"]) for ev in self.events.values())


# -- scenarios ----------------------------------------------------------------------------------------------------

TITLES = ["Dentist", "Team standup", "Yoga class", "Project review", "Budget meeting", "Haircut", "Piano lesson",
          "Lunch with Ana", "1:1 with Ben", "Doctor visit", "Book club", "Car service", "Design sync", "Tax advisor",
          "Parent-teacher meeting", "Gym session", "Coffee with Dev", "Interview", "Vet appointment", "Sprint planning",
          "Physio", "Board meeting", "Swim practice", "Choir rehearsal", "Eye exam", "Team lunch", "Client call",
          "Language class", "Volunteer shift", "Retro"]
NEW_TITLES = ["Call with the bank", "Coffee with Mina", "Plumber visit", "Study session", "Quarterly planning",
              "Code review", "Phone interview", "Guitar practice", "Dinner with Leo", "Workshop prep"]


def time_fact(hhmm_text: str) -> list[str]:
    return fact(hhmm_text, hhmm_text.removeprefix("0"))  # 09:30 or 9:30


def random_calendar(rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    """A few days of non-overlapping events; returns the state and its dates."""
    base = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(700))
    dates = [(base + dt.timedelta(days=i)).isoformat() for i in range(3)]
    cal = Calendar({"events": {}, "next_id": rng.randint(1, 60)})
    for title in rng.sample(TITLES, rng.randint(4, 8)):
        for _ in range(10):
            start = rng.randrange(8 * 60, 17 * 60, 30)
            try:
                cal.create_event(title, rng.choice(dates), hhmm(start), hhmm(start + rng.choice([30, 60, 90])))
                break
            except ToolError:
                continue
    return cal.state, dates


def pick_event(rng: random.Random, state: dict[str, Any]) -> tuple[str, dict[str, str]]:
    event_id = rng.choice(sorted(state["events"]))
    return event_id, state["events"][event_id]


def agenda(rng: random.Random) -> Scenario:
    state, dates = random_calendar(rng)
    day = rng.choice([d for d in dates if any(ev["date"] == d for ev in state["events"].values())])
    titles = [ev["title"] for ev in sorted(state["events"].values(), key=lambda e: e["start"]) if ev["date"] == day]
    return Scenario("single_call", {"calendar": state}, [Turn(
        f"What's on my calendar on {day}?", [[call("list_events", date=day)]],
        f"On {day} you have: {', '.join(titles)}.", [fact(t) for t in titles])])


def book(rng: random.Random) -> Scenario:
    state, dates = random_calendar(rng)
    cal = Calendar(state)
    title, day = rng.choice(NEW_TITLES), rng.choice(dates)
    starts = list(range(8 * 60, 19 * 60, 30))
    rng.shuffle(starts)
    for start in [*starts, 7 * 60]:  # a free hour that day (07:00 always is), so the booking succeeds
        try:
            cal._checked_slot(day, hhmm(start), hhmm(start + 60))
            break
        except ToolError:
            continue
    new_id = f"evt-{state['next_id']}"
    return Scenario("single_call", {"calendar": state}, [Turn(
        f"Put '{title}' on my calendar on {day} from {hhmm(start)} to {hhmm(start + 60)} and give me the event id.",
        [[call("create_event", title=title, date=day, start=hhmm(start), end=hhmm(start + 60))]],
        f"Booked '{title}' on {day}, {hhmm(start)}-{hhmm(start + 60)}. The event id is {new_id}.",
        [fact(new_id)])])


def cancel_by_name(rng: random.Random) -> Scenario:
    state, _ = random_calendar(rng)
    event_id, ev = pick_event(rng, state)
    return Scenario("multi_call", {"calendar": state}, [Turn(
        rng.choice([f"Cancel my '{ev['title']}'. I don't remember the date; tell me which day it was.",
                    f"Please remove '{ev['title']}' from my calendar and tell me what day it was on.",
                    f"I can't make '{ev['title']}'. Cancel it and remind me of the date."]),
        [[call("search_events", text=ev["title"])], [call("cancel_event", event_id=event_id)]],
        f"I cancelled '{ev['title']}' on {ev['date']} ({ev['start']}-{ev['end']}).", [fact(ev["date"])])])


def first_free_slot(rng: random.Random) -> Scenario:
    state, dates = random_calendar(rng)
    day, length, title = rng.choice(dates), rng.choice([30, 60]), rng.choice(NEW_TITLES)
    cal = Calendar(state)
    for start in range(9 * 60, 17 * 60 - length + 1, 30):
        try:
            cal._checked_slot(day, hhmm(start), hhmm(start + length))
            break
        except ToolError:
            continue
    else:
        return agenda(rng)  # a fully booked day: ask something else
    slot = (hhmm(start), hhmm(start + length))
    return Scenario("multi_call", {"calendar": state}, [Turn(
        f"On {day}, book '{title}' for {length} minutes at the earliest free time on the half hour between "
        "09:00 and 17:00. What time did you pick?",
        [[call("list_events", date=day)], [call("create_event", title=title, date=day, start=slot[0], end=slot[1])]],
        f"'{title}' is booked on {day} from {slot[0]} to {slot[1]}.", [time_fact(slot[0])])])


def reschedule_conversation(rng: random.Random) -> Scenario:
    state, dates = random_calendar(rng)
    event_id, ev = pick_event(rng, state)
    target = (dt.date.fromisoformat(dates[-1]) + dt.timedelta(days=rng.randint(1, 5))).isoformat()  # an empty day
    new_title = rng.choice(NEW_TITLES)
    turns = [
        Turn(rng.choice([f"When is my '{ev['title']}'?", f"What day and time is '{ev['title']}'?",
                         f"Look up '{ev['title']}' for me: when is it?"]),
             [[call("search_events", text=ev["title"])]],
             f"'{ev['title']}' is on {ev['date']} from {ev['start']} to {ev['end']} (id {event_id}).",
             [fact(ev["date"]), time_fact(ev["start"])]),
        Turn(f"Move it to {target}, same time.",
             [[call("reschedule_event", event_id=event_id, date=target, start=ev["start"], end=ev["end"])]],
             f"Moved '{ev['title']}' to {target}, {ev['start']}-{ev['end']}.", []),
        Turn(f"Now put '{new_title}' in the slot it left free on {ev['date']}.",
             [[call("create_event", title=new_title, date=ev["date"], start=ev["start"], end=ev["end"])]],
             f"Booked '{new_title}' on {ev['date']}, {ev['start']}-{ev['end']} (id evt-{state['next_id']}).",
             [fact(f"evt-{state['next_id']}")]),
    ]
    return Scenario("multi_turn", {"calendar": state}, turns)


def impossible_calendar(rng: random.Random) -> Scenario:
    state, dates = random_calendar(rng)
    event_id, ev = pick_event(rng, state)
    choice = rng.randrange(3)
    if choice == 0:
        return Scenario("impossible", {"calendar": state}, [Turn(
            f"Cancel my '{ev['title']}' on {ev['date']}.", [],
            "I can't cancel events: I have no tool for that.", possible=False)], withheld_tools=["cancel_event"])
    if choice == 1:
        return Scenario("impossible", {"calendar": state}, [Turn(
            f"Invite Hana to my '{ev['title']}' and send her a reminder.", [],
            "I can't invite people or send reminders: my calendar tools only manage your own events.",
            possible=False)])
    return Scenario("impossible", {"calendar": state}, [Turn(
        f"Book '{rng.choice(NEW_TITLES)}' on {rng.choice(dates)}.", [],
        "What time should it start and end?", possible=False)])


SCENARIOS = [agenda, book, cancel_by_name, first_free_slot, reschedule_conversation, impossible_calendar]
