"""Scenarios that need two domains at once (the tool lists of both are offered)."""

from __future__ import annotations

import random

from envs.tool_calling.banking import random_bank
from envs.tool_calling.domain import money_text
from envs.tool_calling.filesystem import random_files
from envs.tool_calling.messaging import random_messaging
from envs.tool_calling.scenario import Scenario, Turn, call, fact
from envs.tool_calling.scheduling import random_calendar


def share_wifi_password(rng: random.Random) -> Scenario:
    files, info = random_files(rng)
    people = random_messaging(rng)
    contact_id = rng.choice(sorted(people["contacts"]))
    name = people["contacts"][contact_id]["name"]
    text = f"The wifi password is {info['password']}"
    return Scenario("multi_call", {"files": {"files": files}, "messaging": people}, [Turn(
        f"Send {name} the wifi password from {info['wifi_path']}. The message must be exactly: "
        f'"The wifi password is <the password>".',
        [[call("read_file", path=info["wifi_path"]), call("find_contact", name=name)],
         [call("send_message", contact_id=contact_id, text=text)]],
        f'I sent {name}: "{text}".', [fact(info["password"])])])


def tell_event_time(rng: random.Random) -> Scenario:
    calendar, _ = random_calendar(rng)
    people = random_messaging(rng)
    ev = calendar["events"][rng.choice(sorted(calendar["events"]))]
    contact_id = rng.choice(sorted(people["contacts"]))
    name = people["contacts"][contact_id]["name"]
    text = f"My {ev['title']} is on {ev['date']} at {ev['start']}."
    return Scenario("multi_call", {"calendar": calendar, "messaging": people}, [Turn(
        f"Let {name} know when my '{ev['title']}' is. Send exactly: \"My {ev['title']} is on <YYYY-MM-DD> at "
        "<HH:MM>.\"",
        [[call("search_events", text=ev["title"]), call("find_contact", name=name)],
         [call("send_message", contact_id=contact_id, text=text)]],
        f'Sent to {name}: "{text}"', [fact(ev["date"])])])


def balance_to_file(rng: random.Random) -> Scenario:
    files, _ = random_files(rng)
    bank = random_bank(rng)
    cents = bank["accounts"]["checking"]["balance_cents"]
    path = f"/notes/balance-{rng.randint(1, 9999)}.txt"
    return Scenario("multi_call", {"bank": bank, "files": {"files": files}}, [Turn(
        f"Write my checking balance into {path}: only the number with two decimals, like 1234.50.",
        [[call("get_balance", account="checking")], [call("write_file", path=path, content=money_text(cents))]],
        f"Saved {money_text(cents)} to {path}.", [fact(money_text(cents))])])


SCENARIOS = [share_wifi_password, tell_event_time, balance_to_file]
