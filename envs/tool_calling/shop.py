"""An online shop: a catalogue with stock, one cart, and orders that can be cancelled."""

from __future__ import annotations

import random
from typing import Any

from envs.tool_calling.banking import money_fact
from envs.tool_calling.domain import Domain, ToolError, dollars, money_text, tool
from envs.tool_calling.scenario import Scenario, Turn, call, fact

PRODUCT_ID = {"type": "string", "description": "A product id such as p-104"}


class Shop(Domain):
    name = "shop"
    STATE_SCHEMA = {
        "type": "object",
        "properties": {
            "products": {"type": "object", "additionalProperties": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price_cents": {"type": "integer", "minimum": 0},
                               "stock": {"type": "integer", "minimum": 0}},
                "required": ["name", "price_cents", "stock"], "additionalProperties": False}},
            "cart": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
            "orders": {"type": "object", "additionalProperties": {"type": "object"}},
            "next_order": {"type": "integer", "minimum": 1},
        },
        "required": ["products", "cart", "orders", "next_order"],
        "additionalProperties": False,
    }

    def _product(self, product_id: str) -> dict[str, Any]:
        if product_id not in self.state["products"]:
            raise ToolError(f"no such product: {product_id} (use search_products)")
        return self.state["products"][product_id]

    def _cart_total(self) -> int:
        return sum(self._product(p)["price_cents"] * q for p, q in self.state["cart"].items())

    @tool("Search the catalogue by product name (case-insensitive substring).",
          {"query": {"type": "string", "minLength": 1}}, ["query"])
    def search_products(self, query: str) -> dict[str, Any]:
        found = [{"product_id": k, "name": v["name"], "price": dollars(v["price_cents"]), "stock": v["stock"]}
                 for k, v in sorted(self.state["products"].items()) if query.lower() in v["name"].lower()]
        return {"products": found}

    @tool("Set how many of a product are in the cart (0 removes it).",
          {"product_id": PRODUCT_ID, "quantity": {"type": "integer", "minimum": 0}}, ["product_id", "quantity"])
    def set_cart_quantity(self, product_id: str, quantity: int) -> dict[str, Any]:
        product, quantity = self._product(product_id), int(quantity)
        if quantity > product["stock"]:
            raise ToolError(f"only {product['stock']} of {product['name']} in stock")
        if quantity:
            self.state["cart"][product_id] = quantity
        else:
            self.state["cart"].pop(product_id, None)
        return self.view_cart()

    @tool("Show the cart and its total.")
    def view_cart(self) -> dict[str, Any]:
        items = [{"product_id": p, "name": self._product(p)["name"], "quantity": q}
                 for p, q in sorted(self.state["cart"].items())]
        return {"items": items, "total": dollars(self._cart_total())}

    @tool("Place an order for everything in the cart, shipped to an address.",
          {"address": {"type": "string", "minLength": 5}}, ["address"])
    def checkout(self, address: str) -> dict[str, Any]:
        cart = self.state["cart"]
        if not cart:
            raise ToolError("the cart is empty")
        total = self._cart_total()
        for product_id, quantity in cart.items():
            self._product(product_id)["stock"] -= quantity
        order_id = f"ord-{self.state['next_order']}"
        self.state["next_order"] += 1
        self.state["orders"][order_id] = {"items": dict(cart), "total_cents": total, "address": address,
                                          "status": "placed"}
        self.state["cart"] = {}
        return {"order_id": order_id, "total": dollars(total)}

    @tool("Show an order.", {"order_id": {"type": "string"}}, ["order_id"])
    def get_order(self, order_id: str) -> dict[str, Any]:
        order = self._order(order_id)
        return {"order_id": order_id, **{k: v for k, v in order.items() if k != "total_cents"},
                "total": dollars(order["total_cents"])}

    @tool("Cancel a placed order; its items go back into stock and the total is refunded.",
          {"order_id": {"type": "string"}}, ["order_id"])
    def cancel_order(self, order_id: str) -> dict[str, Any]:
        order = self._order(order_id)
        if order["status"] != "placed":
            raise ToolError(f"order {order_id} is {order['status']}, only placed orders can be cancelled")
        for product_id, quantity in order["items"].items():
            self._product(product_id)["stock"] += quantity
        order["status"] = "cancelled"
        return {"order_id": order_id, "status": "cancelled", "refund": dollars(order["total_cents"])}

    def _order(self, order_id: str) -> dict[str, Any]:
        if order_id not in self.state["orders"]:
            raise ToolError(f"no such order: {order_id}")
        return self.state["orders"][order_id]

    def snapshot(self) -> Any:
        stock = {k: v["stock"] for k, v in self.state["products"].items()}
        orders = sorted((sorted(o["items"].items()), o["total_cents"], " ".join(o["address"].split()), o["status"])
                        for o in self.state["orders"].values())
        return {"stock": stock, "cart": self.state["cart"], "orders": orders}


# -- scenarios ----------------------------------------------------------------------------------------------------

CATALOGUE = ["USB-C cable", "Wireless mouse", "Mechanical keyboard", "Coffee beans 1kg", "Yoga mat", "Desk lamp",
             "Water bottle", "Notebook A5", "Noise-cancelling headphones", "Phone stand", "Backpack", "Tea sampler",
             "Running socks", "Plant pot", "Webcam", "Travel mug", "Board game", "Sunglasses", "Umbrella",
             "Bike light"]
STREETS = ["Oak Street", "Harbor Road", "Elm Avenue", "Mill Lane", "Park Row", "Station Road", "Cedar Court"]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Brookfield", "Ashford"]


def random_shop(rng: random.Random, with_cart: bool = False) -> dict[str, Any]:
    first = rng.randint(100, 800)
    products = {f"p-{first + i}": {"name": name, "price_cents": rng.randint(299, 15999), "stock": rng.randint(1, 12)}
                for i, name in enumerate(rng.sample(CATALOGUE, rng.randint(6, 12)))}
    cart = {}
    if with_cart:
        for product_id in rng.sample(sorted(products), 2):
            cart[product_id] = 1
    return {"products": products, "cart": cart, "orders": {}, "next_order": rng.randint(1000, 99999)}


def address(rng: random.Random) -> str:
    return f"{rng.randint(1, 250)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"


def price_check(rng: random.Random) -> Scenario:
    state = random_shop(rng)
    product = rng.choice(list(state["products"].values()))
    want = rng.randint(2, 9)
    return Scenario("single_call", {"shop": state}, [Turn(
        rng.choice([f"How much is the {product['name'].lower()}, and how many are in stock? I might want {want}.",
                    f"I'm thinking of buying {want} x {product['name']}. What's the price of one and the stock?",
                    f"Check the price of the {product['name'].lower()} and whether {want} are available."]),
        [[call("search_products", query=product["name"])]],
        f"The {product['name']} costs ${money_text(product['price_cents'])}; {product['stock']} in stock.",
        [money_fact(product["price_cents"])])])


def buy_two(rng: random.Random) -> Scenario:
    state = random_shop(rng)
    (pa, a), (pb, b) = rng.sample(sorted(state["products"].items()), 2)
    qa = rng.randint(1, a["stock"])
    total = a["price_cents"] * qa + b["price_cents"]
    ship = address(rng)
    order = f"ord-{state['next_order']}"
    return Scenario("multi_call", {"shop": state}, [Turn(
        f"Order {qa} x {a['name']} and 1 x {b['name']}, shipped to {ship}. Give me the order number and total.",
        [[call("search_products", query=a["name"]), call("search_products", query=b["name"])],
         [call("set_cart_quantity", product_id=pa, quantity=qa), call("set_cart_quantity", product_id=pb, quantity=1)],
         [call("checkout", address=ship)]],
        f"Order {order} is placed; the total is ${money_text(total)}.", [fact(order), money_fact(total)])])


def buy_what_is_left(rng: random.Random) -> Scenario:
    state = random_shop(rng)
    pid, product = rng.choice(sorted(state["products"].items()))
    want = product["stock"] + rng.randint(1, 5)
    ship = address(rng)
    total = product["price_cents"] * product["stock"]
    return Scenario("multi_call", {"shop": state}, [Turn(
        f"I'd like {want} x {product['name']} sent to {ship}. If there aren't that many, buy all there are. "
        "How many did you order?",
        [[call("search_products", query=product["name"])],
         [call("set_cart_quantity", product_id=pid, quantity=product["stock"])], [call("checkout", address=ship)]],
        f"Only {product['stock']} were in stock, so I ordered {product['stock']} for ${money_text(total)}.",
        [fact(str(product["stock"]))])])


def cart_conversation(rng: random.Random) -> Scenario:
    state = random_shop(rng)
    (pa, a), (pb, b) = rng.sample(sorted(state["products"].items()), 2)
    first_qty = min(3, a["stock"])
    ship = address(rng)
    total = a["price_cents"] * 1 + b["price_cents"]
    order = f"ord-{state['next_order']}"
    turns = [
        Turn(rng.choice([f"Put {first_qty} x {a['name']} in my cart.",
                         f"Add {first_qty} of the {a['name']} to my cart.",
                         f"I'd like {first_qty} x {a['name']} in the cart, please."]),
             [[call("search_products", query=a["name"])],
              [call("set_cart_quantity", product_id=pa, quantity=first_qty)]],
             f"Added {first_qty} x {a['name']} to your cart.", []),
        Turn(f"Actually, just one of those, and add a {b['name']} too.",
             [[call("set_cart_quantity", product_id=pa, quantity=1)], [call("search_products", query=b["name"])],
              [call("set_cart_quantity", product_id=pb, quantity=1)]],
             f"Your cart now has 1 x {a['name']} and 1 x {b['name']}.", []),
        Turn(f"Check out, shipping to {ship}. What's the total?", [[call("checkout", address=ship)]],
             f"Order {order} placed; total ${money_text(total)}.", [money_fact(total)]),
    ]
    return Scenario("multi_turn", {"shop": state}, turns)


def cancel_recent(rng: random.Random) -> Scenario:
    state = random_shop(rng)
    shop = Shop(state)
    pid = rng.choice(sorted(state["products"]))
    shop.set_cart_quantity(pid, 1)
    order_id = shop.checkout(address(rng))["order_id"]
    refund = shop.state["orders"][order_id]["total_cents"]
    return Scenario("single_call", {"shop": shop.state}, [Turn(
        f"Cancel order {order_id}. How much will I get back?", [[call("cancel_order", order_id=order_id)]],
        f"Order {order_id} is cancelled; you'll be refunded ${money_text(refund)}.", [money_fact(refund)])])


def impossible_shop(rng: random.Random) -> Scenario:
    state = random_shop(rng, with_cart=True)
    choice = rng.randrange(3)
    if choice == 0:
        return Scenario("impossible", {"shop": state}, [Turn(
            f"Apply the discount code SAVE{rng.randint(10, 50)} to my cart.", [],
            "I can't apply discount codes: there is no tool for coupons.", possible=False)])
    if choice == 1:
        return Scenario("impossible", {"shop": state}, [Turn(
            "Check out my cart, please.", [], "Which address should the order be shipped to?", possible=False)])
    return Scenario("impossible", {"shop": state}, [Turn(
        f"Check out my cart and ship it to {address(rng)}.", [],
        "I can't place orders: I have no checkout tool.", possible=False)], withheld_tools=["checkout"])


SCENARIOS = [price_check, buy_two, buy_what_is_left, cart_conversation, cancel_recent, impossible_shop]
