"""A messaging app: contacts, an inbox (read/unread) and sent messages."""

from __future__ import annotations

import random
from typing import Any

from envs.tool_calling.domain import Domain, ToolError, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact

MESSAGE_ID = {"type": "string", "description": "A message id such as msg-4"}


def normal_text(text: str) -> str:
    return " ".join(text.split())


class Messaging(Domain):
    name = "messaging"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {
            "contacts": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"name": {"type": "string"}, "phone": {"type": "string"}},
                "required": ["name", "phone"], "additionalProperties": False}},
            "inbox": {"type": "array", "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "from": {"type": "string"}, "text": {"type": "string"},
                               "read": {"type": "boolean"}},
                "required": ["id", "from", "text", "read"], "additionalProperties": False}},
            "sent": {"type": "array", "items": {"type": "object"}},
            "next_id": {"type": "integer", "minimum": 1},
        },
        "required": ["contacts", "inbox", "sent", "next_id"],
        "additionalProperties": False,
    }

    def _message(self, message_id: str) -> dict[str, Any]:
        for m in self.state["inbox"]:
            if m["id"] == message_id:
                return m
        raise ToolError(f"no such message: {message_id}")

    @tool("List all contacts.")
    def list_contacts(self) -> dict[str, Any]:
        return {"contacts": [{"contact_id": k, **v} for k, v in sorted(self.state["contacts"].items())]}

    @tool("Find contacts whose name contains a text (case-insensitive).",
          {"name": {"type": "string", "minLength": 1}}, ["name"])
    def find_contact(self, name: str) -> dict[str, Any]:
        found = [{"contact_id": k, **v} for k, v in sorted(self.state["contacts"].items())
                 if name.lower() in v["name"].lower()]
        return {"contacts": found}

    @tool("Read the inbox, newest first.", {"unread_only": {"type": "boolean"}})
    def read_inbox(self, unread_only: bool = False) -> dict[str, Any]:
        names = self.state["contacts"]
        shown = [{**m, "from_name": names.get(m["from"], {}).get("name", m["from"])}
                 for m in reversed(self.state["inbox"]) if not (unread_only and m["read"])]
        return {"messages": shown}

    @tool("Mark an inbox message as read.", {"message_id": MESSAGE_ID}, ["message_id"])
    def mark_read(self, message_id: str) -> dict[str, Any]:
        self._message(message_id)["read"] = True
        return {"message_id": message_id, "read": True}

    @tool("Delete an inbox message.", {"message_id": MESSAGE_ID}, ["message_id"])
    def delete_message(self, message_id: str) -> dict[str, Any]:
        self.state["inbox"].remove(self._message(message_id))
        return {"deleted": message_id}

    @tool("Send a text message to a contact.",
          {"contact_id": {"type": "string"}, "text": {"type": "string", "minLength": 1}}, ["contact_id", "text"])
    def send_message(self, contact_id: str, text: str) -> dict[str, Any]:
        if contact_id not in self.state["contacts"]:
            raise ToolError(f"no such contact: {contact_id} (use find_contact or list_contacts)")
        message_id = f"out-{self.state['next_id']}"
        self.state["next_id"] += 1
        self.state["sent"].append({"id": message_id, "to": contact_id, "text": text})
        return {"message_id": message_id, "to": contact_id}

    def snapshot(self) -> Any:
        sent = sorted((m["to"], normal_text(m["text"])) for m in self.state["sent"])
        inbox = sorted((m["id"], m["from"], m["text"], m["read"]) for m in self.state["inbox"])
        return {"contacts": self.state["contacts"], "inbox": inbox, "sent": sent}


# -- scenarios ----------------------------------------------------------------------------------------------------

CONTACTS = [("Alice", "Chen"), ("Bruno", "Silva"), ("Carmen", "Ortiz"), ("Daniel", "Kim"), ("Emma", "Novak"),
            ("Farid", "Haddad"), ("Greta", "Larsen"), ("Hiro", "Tanaka"), ("Isla", "Murphy"), ("Jonas", "Weber"),
            ("Kofi", "Mensah"), ("Lena", "Fischer"), ("Marco", "Rossi"), ("Nadia", "Petrova"), ("Oscar", "Lindqvist")]
PLACES = ["the station", "the cafe on Main Street", "the library", "gate 4", "the north entrance", "the bakery"]
THINGS = ["the keys", "a charger", "the tickets", "an umbrella", "the slides", "some snacks", "the contract"]


def random_messaging(rng: random.Random) -> dict[str, Any]:
    people = rng.sample(CONTACTS, rng.randint(4, 8))
    contacts = {first.lower(): {"name": f"{first} {last}", "phone": f"+1-555-{rng.randint(1000, 9999)}"}
                for first, last in people}
    inbox = []
    first_id = rng.randint(1, 500)
    for i in range(rng.randint(3, 6)):
        sender = rng.choice(sorted(contacts))
        text = rng.choice([f"Meet me at {rng.choice(PLACES)} at {rng.randint(1, 11)} pm?",
                           f"Can you bring {rng.choice(THINGS)} tomorrow?",
                           f"The code for the door is {rng.randint(1000, 9999)}.",
                           f"I'm running {rng.choice([5, 10, 15, 20])} minutes late."])
        inbox.append({"id": f"msg-{first_id + i}", "from": sender, "text": text, "read": rng.random() < 0.5})
    if all(m["read"] for m in inbox):
        inbox[-1]["read"] = False
    return {"contacts": contacts, "inbox": inbox, "sent": [], "next_id": rng.randint(1, 900)}


def unread_senders(rng: random.Random) -> Scenario:
    state = random_messaging(rng)
    names = sorted({state["contacts"][m["from"]]["name"] for m in state["inbox"] if not m["read"]})
    waiting = rng.choice(sorted(state["contacts"].values(), key=lambda c: c["name"]))["name"].split()[0]
    ask = rng.choice([f"I'm waiting to hear from {waiting}. Who has sent me messages I haven't read yet?",
                      f"Who are my unread messages from? I hope {waiting} wrote.",
                      f"Check my unread messages and tell me who sent them (is {waiting} among them?)."])
    return Scenario("single_call", {"messaging": state}, [Turn(
        ask, [[call("read_inbox", unread_only=True)]],
        f"You have unread messages from {', '.join(names)}.", [fact(n.split()[0]) for n in names])])


def send_text(rng: random.Random) -> Scenario:
    state = random_messaging(rng)
    contact_id = rng.choice(sorted(state["contacts"]))
    name = state["contacts"][contact_id]["name"]
    text = f"See you at {rng.choice(PLACES)} at {rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])}."
    return Scenario("multi_call", {"messaging": state}, [Turn(
        f'Send {name} this exact message: "{text}"',
        [[call("find_contact", name=name)], [call("send_message", contact_id=contact_id, text=text)]],
        f"Sent to {name}.", [])])


def mark_all_read(rng: random.Random) -> Scenario:
    state = random_messaging(rng)
    skip = rng.choice(sorted(state["contacts"]))
    unread = [m["id"] for m in reversed(state["inbox"]) if not m["read"] and m["from"] != skip]
    if not unread:  # everything unread is from that person: nothing would be marked
        state["inbox"].append({"id": "msg-9999", "from": rng.choice(sorted(set(state["contacts"]) - {skip})),
                               "text": "Call me when you can.", "read": False})
        unread = ["msg-9999"]
    name = state["contacts"][skip]["name"]
    return Scenario("multi_call", {"messaging": state}, [Turn(
        rng.choice([f"Mark all my unread messages as read, except any from {name}, and tell me how many you marked.",
                    f"Apart from {name}'s, mark every unread message as read. How many was that?",
                    f"Clear my unread messages (mark them read) but leave {name}'s unread. Tell me the count."]),
        [[call("read_inbox", unread_only=True)], [call("mark_read", message_id=i) for i in unread]],
        f"I marked {len(unread)} message{'s' if len(unread) > 1 else ''} as read.", [fact(str(len(unread)))])])


def reply_conversation(rng: random.Random) -> Scenario:
    state = random_messaging(rng)
    msg = rng.choice(state["inbox"])
    state["inbox"] = [m for m in state["inbox"] if m["from"] != msg["from"] or m is msg]  # one message from them
    name = state["contacts"][msg["from"]]["name"]
    first = name.split()[0]
    reply = rng.choice(["Sounds good, see you there!", "Sure, no problem.", "Thanks for letting me know!"])
    turns = [
        Turn(rng.choice([f"What did {first} write to me? Quote the message.",
                         f"Read me {first}'s message, word for word.",
                         f"{first} sent me something earlier. What exactly did it say?"]), [[call("read_inbox")]],
             f'{name} wrote: "{msg["text"]}"', [fact(msg["text"].rstrip(".?!"))]),
        Turn(f'Reply to {first} with exactly: "{reply}"',
             [[call("send_message", contact_id=msg["from"], text=reply)]], f"I replied to {first}.", []),
        Turn("Now delete that message of theirs.", [[call("delete_message", message_id=msg["id"])]],
             f"Deleted {first}'s message.", []),
    ]
    return Scenario("multi_turn", {"messaging": state}, turns)


def impossible_messaging(rng: random.Random) -> Scenario:
    state = random_messaging(rng)
    name = state["contacts"][rng.choice(sorted(state["contacts"]))]["name"]
    choice = rng.randrange(3)
    if choice == 0:
        ask = rng.choice([f"Call {name} on the phone for me.", f"Start a video call with {name}.",
                          f"Phone {name} and tell them I'm late."])
        return Scenario("impossible", {"messaging": state}, [Turn(
            ask, [], "I can't make phone calls; I can only send text messages.", possible=False)])
    if choice == 1:
        ask = rng.choice([f"Send a message to {name}.", f"Text {name} for me.", f"Write to {name}, please."])
        return Scenario("impossible", {"messaging": state}, [Turn(
            ask, [], f"What should the message to {name} say?", possible=False)])
    return Scenario("impossible", {"messaging": state}, [Turn(
        f'Text {name}: "I\'m on my way."', [], "I can't send messages: I have no tool for sending.",
        possible=False)], withheld_tools=["send_message"])


SCENARIOS = [unread_senders, send_text, mark_all_read, reply_conversation, impossible_messaging]
