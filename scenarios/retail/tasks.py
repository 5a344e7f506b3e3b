"""Seeded task generator for the retail scenario.

Every task gets its own small shop: a few customers with a few orders each. The customer names a
product; the agent must find which order holds it, and that depends on ids and statuses it can
only see through the tools. Groups are (task kind, product), so the test split asks about
products in ways the train split never does.
"""

import random

PRODUCTS = [
    ("T-Shirt", ["red", "blue", "black"]), ("Hoodie", ["grey", "navy"]), ("Running Shoes", ["size 9", "size 10"]),
    ("Backpack", ["green", "black"]), ("Water Bottle", ["1 litre", "500 ml"]), ("Desk Lamp", ["white", "black"]),
    ("Office Chair", ["mesh", "leather"]), ("Mechanical Keyboard", ["blue switches", "red switches"]),
    ("Wireless Mouse", ["black", "white"]), ("Monitor", ["24 inch", "27 inch"]), ("Headphones", ["over-ear", "in-ear"]),
    ("Coffee Maker", ["drip", "espresso"]), ("Blender", ["600 W", "900 W"]), ("Yoga Mat", ["purple", "teal"]),
    ("Tent", ["2-person", "4-person"]), ("Sleeping Bag", ["summer", "winter"]), ("Cookware Set", ["steel", "nonstick"]),
    ("Smart Watch", ["silver", "black"]), ("Bluetooth Speaker", ["small", "large"]), ("E-Reader", ["8 GB", "32 GB"]),
    ("Air Purifier", ["small room", "large room"]), ("Vacuum Cleaner", ["corded", "cordless"]),
    ("Sunglasses", ["polarized", "standard"]), ("Wall Clock", ["wood", "metal"]),
]
FIRST = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana", "ivan", "jin", "kai", "lena", "mo", "nora",
         "omar", "pia", "raj", "sara", "tom", "uma", "vic", "wen", "yara", "zoe"]
LAST = ["lee", "kim", "garcia", "smith", "novak", "ito", "silva", "khan", "brown", "rossi", "muller", "dubois"]
STREETS = ["Oak Street", "Maple Avenue", "Pine Road", "Cedar Lane", "Elm Court", "Birch Way", "Lake Drive", "Hill Street"]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Milford", "Ashland", "Clayton"]
KINDS = ["cancel", "address", "return", "price"]
REASONS = {"no longer needed": "I no longer need it.", "ordered by mistake": "I ordered it by mistake."}


def generate_tasks(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [_task(rng, index) for index in range(count)]


def _task(rng: random.Random, index: int) -> dict:
    kind = KINDS[index % len(KINDS)]
    product, options = rng.choice(PRODUCTS)
    others = [p for p in PRODUCTS if p[0] != product]
    ids = _Ids(rng)
    users, orders = {}, {}
    for _ in range(3):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        user_id = f"{first}_{last}_{rng.randint(1000, 9999)}"
        users[user_id] = {"name": f"{first.title()} {last.title()}", "email": f"{first}.{last}{rng.randint(1, 99)}@example.com",
                          "orders": []}
    user_id = next(iter(users))
    user = users[user_id]

    target_status = {"cancel": "pending", "address": "pending", "return": "delivered",
                     "price": rng.choice(["pending", "delivered"])}[kind]
    plans = [(target_status, True)]
    if kind != "price":  # the same product in an order the request does not mean
        plans.append(("delivered" if target_status == "pending" else "pending", True))
    plans += [(rng.choice(["pending", "delivered"]), False) for _ in range(rng.randint(1, 2))]
    rng.shuffle(plans)
    target_order = None
    for status, has_product in plans:
        order_id = ids.order()
        items = [_item(rng, ids, *rng.choice(others)) for _ in range(rng.randint(0 if has_product else 1, 2))]
        if has_product:
            product_item = _item(rng, ids, product, options)
            items.insert(rng.randint(0, len(items)), product_item)
        orders[order_id] = {"user_id": user_id, "status": status, "address": _address(rng), "items": items}
        user["orders"].append(order_id)
        if has_product and status == target_status and target_order is None:
            target_order, target_item = order_id, product_item
    for other_id in list(users)[1:]:
        order_id = ids.order()
        orders[order_id] = {"user_id": other_id, "status": "pending", "address": _address(rng),
                            "items": [_item(rng, ids, product, options)]}
        users[other_id]["orders"].append(order_id)

    oracle = [{"name": "find_user_id_by_email", "arguments": {"email": user["email"]}},
              {"name": "get_user_details", "arguments": {"user_id": user_id}}]
    for order_id in user["orders"]:
        oracle.append({"name": "get_order_details", "arguments": {"order_id": order_id}})
        if order_id == target_order:
            break
    hello = f"Hi, I'm {user['name']}, my email is {user['email']}."
    hidden, required = [], [target_order]
    if kind == "cancel":
        reason = rng.choice(list(REASONS))
        goal = f"{hello} Please cancel my pending order that has the {product} in it."
        hidden.append({"keywords": ["reason", "why"], "reply": REASONS[reason]})
        oracle += [{"name": "ask_user", "arguments": {"message": "What is the reason for the cancellation?"}},
                   {"name": "cancel_order", "arguments": {"order_id": target_order, "reason": reason}},
                   {"name": "final_answer", "arguments": {"answer": f"Your order {target_order} is cancelled."}}]
    elif kind == "address":
        new_address = _address(rng)
        goal = f"{hello} I moved. Please change the shipping address of my pending order with the {product}."
        hidden.append({"keywords": ["address", "where"], "reply": f"My new address is {new_address}."})
        oracle += [{"name": "ask_user", "arguments": {"message": "What is the new shipping address?"}},
                   {"name": "modify_order_address", "arguments": {"order_id": target_order, "address": new_address}},
                   {"name": "final_answer", "arguments": {"answer": f"Order {target_order} now ships to {new_address}."}}]
    elif kind == "return":
        goal = f"{hello} I want to return the {product} ({target_item['option']}) I received."
        oracle += [{"name": "return_items", "arguments": {"order_id": target_order, "item_ids": [target_item["item_id"]]}},
                   {"name": "final_answer", "arguments": {
                       "answer": f"The return of the {product} from order {target_order} is requested; "
                                 f"you will be refunded {target_item['price']:.2f}."}}]
    else:
        price = f"{target_item['price']:.2f}"
        goal = f"{hello} How much did I pay for the {product}?"
        required = [price]
        oracle.append({"name": "final_answer", "arguments": {
            "answer": f"You paid {price} for the {product} in order {target_order}."}})
    return {"id": f"retail-{index:04d}", "group": f"{kind}:{product}", "goal": goal, "hidden": hidden,
            "initial_state": {"users": users, "orders": orders}, "required_outputs": required, "oracle": oracle}


class _Ids:
    """Unique order and item ids within one task's shop."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def _fresh(self, prefix: str) -> str:
        while (value := f"{prefix}{self.rng.randint(10000, 99999)}") in self.used:
            pass
        self.used.add(value)
        return value

    def order(self) -> str:
        return self._fresh("#W")

    def item(self) -> str:
        return self._fresh("I")


def _item(rng: random.Random, ids: _Ids, product: str, options: list[str]) -> dict:
    return {"item_id": ids.item(), "product": product, "option": rng.choice(options),
            "price": round(rng.uniform(8, 400), 2), "returned": False}


def _address(rng: random.Random) -> str:
    return f"{rng.randint(1, 999)} {rng.choice(STREETS)}, {rng.choice(CITIES)} {rng.randint(10000, 99999)}"
