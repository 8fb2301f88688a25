"""A bank: accounts with balances (integer cents), payees for bills, and a transaction log."""

from __future__ import annotations

import random
from typing import Any

from envs.tool_calling.domain import AMOUNT, Domain, ToolError, dollars, money_text, to_cents, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact

ACCOUNT = {"type": "string", "description": "Account name, e.g. checking"}


def money_fact(cents: int) -> list[str]:
    spellings = [money_text(cents)]
    if cents % 100 == 0:
        spellings.append(str(cents // 100))
    return fact(*spellings)


class Bank(Domain):
    name = "bank"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {
            "accounts": {"type": "object", "minProperties": 1, "additionalProperties": {
                "type": "object", "properties": {"balance_cents": {"type": "integer"}},
                "required": ["balance_cents"], "additionalProperties": False}},
            "payees": {"type": "object", "additionalProperties": {"type": "string"}},
            "transactions": {"type": "array", "items": {"type": "object"}},
            "next_id": {"type": "integer", "minimum": 1},
        },
        "required": ["accounts", "payees", "transactions", "next_id"],
        "additionalProperties": False,
    }

    def _account(self, name: str) -> dict[str, int]:
        if name not in self.state["accounts"]:
            raise ToolError(f"no such account: {name} (accounts: {', '.join(sorted(self.state['accounts']))})")
        return self.state["accounts"][name]

    def _log(self, account: str, kind: str, cents: int, counterparty: str) -> str:
        tx_id = f"tx-{self.state['next_id']}"
        self.state["next_id"] += 1
        self.state["transactions"].append({"id": tx_id, "account": account, "kind": kind, "amount_cents": cents,
                                           "counterparty": counterparty})
        return tx_id

    def _debit(self, account: str, cents: int) -> None:
        acct = self._account(account)
        if acct["balance_cents"] < cents:
            raise ToolError(f"insufficient funds in {account}: balance {money_text(acct['balance_cents'])}, "
                            f"needed {money_text(cents)}")
        acct["balance_cents"] -= cents

    @tool("List the accounts and their balances.")
    def list_accounts(self) -> dict[str, Any]:
        return {"accounts": [{"account": n, "balance": dollars(a["balance_cents"])}
                             for n, a in sorted(self.state["accounts"].items())]}

    @tool("Get the balance of one account.", {"account": ACCOUNT}, ["account"])
    def get_balance(self, account: str) -> dict[str, Any]:
        return {"account": account, "balance": dollars(self._account(account)["balance_cents"])}

    @tool("Move money between two of the user's accounts.",
          {"source": ACCOUNT, "target": ACCOUNT, "amount": AMOUNT}, ["source", "target", "amount"])
    def transfer(self, source: str, target: str, amount: float) -> dict[str, Any]:
        cents = to_cents(amount)
        if source == target:
            raise ToolError("source and target are the same account")
        self._account(target)
        self._debit(source, cents)
        self._account(target)["balance_cents"] += cents
        tx_id = self._log(source, "transfer", cents, target)
        return {"transaction_id": tx_id, "source_balance": dollars(self._account(source)["balance_cents"]),
                "target_balance": dollars(self._account(target)["balance_cents"])}

    @tool("List the payees bills can be paid to.")
    def list_payees(self) -> dict[str, Any]:
        return {"payees": [{"payee_id": k, "name": v} for k, v in sorted(self.state["payees"].items())]}

    @tool("Pay a bill to a payee from an account.",
          {"account": ACCOUNT, "payee_id": {"type": "string"}, "amount": AMOUNT}, ["account", "payee_id", "amount"])
    def pay_bill(self, account: str, payee_id: str, amount: float) -> dict[str, Any]:
        cents = to_cents(amount)
        if payee_id not in self.state["payees"]:
            raise ToolError(f"no such payee: {payee_id} (see list_payees)")
        self._debit(account, cents)
        tx_id = self._log(account, "bill", cents, payee_id)
        return {"transaction_id": tx_id, "balance": dollars(self._account(account)["balance_cents"])}

    @tool("The most recent transactions of an account, newest first.",
          {"account": ACCOUNT, "limit": {"type": "integer", "minimum": 1, "maximum": 50}}, ["account"])
    def list_transactions(self, account: str, limit: int = 5) -> dict[str, Any]:
        self._account(account)
        mine = [t for t in self.state["transactions"] if t["account"] == account or t["counterparty"] == account]
        return {"transactions": [{**t, "amount": dollars(t["amount_cents"])} for t in reversed(mine)][:int(limit)]}

    def snapshot(self) -> Any:
        balances = {n: a["balance_cents"] for n, a in self.state["accounts"].items()}
        log = sorted((t["account"], t["kind"], t["amount_cents"], t["counterparty"])
                     for t in self.state["transactions"])
        return {"balances": balances, "transactions": log, "payees": self.state["payees"]}


# -- scenarios ----------------------------------------------------------------------------------------------------

PAYEES = {"city-power": "City Power & Light", "aqua-water": "Aqua Water Works", "fastnet": "FastNet Internet",
          "metro-gas": "Metro Gas", "greenleaf-rent": "Greenleaf Apartments", "cellcom": "CellCom Mobile"}


def random_bank(rng: random.Random) -> dict[str, Any]:
    names = ["checking", "savings"] + rng.sample(["vacation", "emergency", "business"], rng.randint(0, 2))
    return {
        "accounts": {n: {"balance_cents": rng.randint(5_000, 900_000)} for n in names},
        "payees": dict(rng.sample(sorted(PAYEES.items()), 4)),
        "transactions": [],
        "next_id": rng.randint(100, 9000),
    }


def balance(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    account = rng.choice(sorted(state["accounts"]))
    cents = state["accounts"][account]["balance_cents"]
    need = rng.randint(1, 9000)
    ask = rng.choice([f"Do I have at least ${need} in my {account} account? Tell me the exact balance.",
                      f"I want to spend about ${need}. How much money is in my {account} account?",
                      f"What's the balance of {account}? I'm checking whether ${need} would fit."])
    return Scenario("single_call", {"bank": state}, [Turn(
        ask, [[call("get_balance", account=account)]],
        f"Your {account} account has ${money_text(cents)}.", [money_fact(cents)])])


def transfer_once(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    source, target = rng.sample(sorted(state["accounts"]), 2)
    cents = rng.randint(100, state["accounts"][source]["balance_cents"])
    if rng.random() < 0.5:
        cents -= cents % 100  # whole dollars half the time
    left = state["accounts"][source]["balance_cents"] - cents
    return Scenario("single_call", {"bank": state}, [Turn(
        f"Transfer ${money_text(cents)} from {source} to {target}, then tell me the confirmation number.",
        [[call("transfer", source=source, target=target, amount=dollars(cents))]],
        f"Done: transaction tx-{state['next_id']}. {source.title()} now has ${money_text(left)}.",
        [fact(f"tx-{state['next_id']}")])])


def pay_bill(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    payee_id, payee = rng.choice(sorted(state["payees"].items()))
    cents = rng.randint(1_000, 30_000)
    left = state["accounts"]["checking"]["balance_cents"] - cents
    if left < 0:
        state["accounts"]["checking"]["balance_cents"] += cents
        left += cents
    return Scenario("multi_call", {"bank": state}, [Turn(
        f"Pay my {payee} bill of ${money_text(cents)} from checking. What's left in checking afterwards?",
        [[call("list_payees")], [call("pay_bill", account="checking", payee_id=payee_id, amount=dollars(cents))]],
        f"Paid ${money_text(cents)} to {payee}. Checking now has ${money_text(left)}.", [money_fact(left)])])


def sweep(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    keep = rng.randint(2, 60) * 5000
    state["accounts"]["checking"]["balance_cents"] = keep + rng.randint(1_000, 400_000)
    moved = state["accounts"]["checking"]["balance_cents"] - keep
    return Scenario("multi_call", {"bank": state}, [Turn(
        rng.choice([f"Move everything above ${keep // 100} in checking into savings. How much did you move?",
                    f"Keep ${keep // 100} in checking and sweep the rest into savings; tell me the amount moved.",
                    f"Checking should only hold ${keep // 100}. Put the excess in savings and say how much."]),
        [[call("get_balance", account="checking")],
         [call("transfer", source="checking", target="savings", amount=dollars(moved))]],
        f"I moved ${money_text(moved)} from checking to savings; checking keeps ${money_text(keep)}.",
        [money_fact(moved)])])


def overdraft_recovery(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    have = state["accounts"]["savings"]["balance_cents"]
    ask = have + rng.randint(1, 500) * 100
    return Scenario("multi_call", {"bank": state}, [Turn(
        f"Transfer ${money_text(ask)} from savings to checking. If savings doesn't have that much, transfer "
        "whatever savings has instead, and tell me the amount.",
        [[call("transfer", source="savings", target="checking", amount=dollars(ask))],
         [call("get_balance", account="savings")],
         [call("transfer", source="savings", target="checking", amount=dollars(have))]],
        f"Savings only had ${money_text(have)}, so I transferred ${money_text(have)} to checking.",
        [money_fact(have)])])


def money_conversation(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    savings = state["accounts"]["savings"]["balance_cents"]
    cents = rng.randint(1, max(1, savings // 200)) * 100
    goal = rng.choice(["a new bike", "a trip to Lisbon", "a laptop", "a wedding gift", "car repairs", "a sofa",
                       "concert tickets", "a camera", "school fees", "a birthday party"])
    total = sum(a["balance_cents"] for a in state["accounts"].values())
    turns = [
        Turn(rng.choice([f"I need money for {goal}. How much is in my savings?",
                         f"How much do I have in savings? It's for {goal}.",
                         f"Can I afford {goal}? Start by telling me my savings balance."]),
             [[call("get_balance", account="savings")]],
             f"Savings has ${money_text(savings)}.", [money_fact(savings)]),
        Turn(f"Transfer ${money_text(cents)} of it to checking.",
             [[call("transfer", source="savings", target="checking", amount=dollars(cents))]],
             f"Done: ${money_text(cents)} moved to checking (transaction tx-{state['next_id']}).", []),
        Turn("What's my total across all accounts now?", [[call("list_accounts")]],
             f"Your accounts hold ${money_text(total)} in total.", [money_fact(total)]),
    ]
    return Scenario("multi_turn", {"bank": state}, turns)


def impossible_bank(rng: random.Random) -> Scenario:
    state = random_bank(rng)
    choice = rng.randrange(3)
    if choice == 0:
        return Scenario("impossible", {"bank": state}, [Turn(
            "Move some money from checking to savings.", [],
            "How much should I move from checking to savings?", possible=False)])
    if choice == 1:
        return Scenario("impossible", {"bank": state}, [Turn(
            f"Buy ${rng.randint(2, 90) * 50} of index fund shares with my savings.", [],
            "I can't buy investments: my tools only handle your accounts, transfers and bills.", possible=False)])
    payee = rng.choice(sorted(state["payees"].values()))
    return Scenario("impossible", {"bank": state}, [Turn(
        f"Pay my {payee} bill of ${rng.randint(20, 200)}.00 from checking.", [],
        "I can't pay bills: I don't have a bill-payment tool.", possible=False)], withheld_tools=["pay_bill"])


SCENARIOS = [balance, transfer_once, pay_bill, sweep, overdraft_recovery, money_conversation, impossible_bank]
