"""Seeded task generator for the travel (flight-booking) scenario.

Every task gets its own small world: three travellers with payment methods and reservations, and
six to fifteen flights. The traveller names a route and a date; the flight, payment and
reservation ids the agent must act on appear only in tool outputs, next to distractors (other
flights on the same route and day, other trips to the same city). Groups are (task kind, route),
so the test split asks about routes in ways the train split never does.

Task kinds:
- cheapest: book the cheapest economy flight with seats left; the payment method is hidden.
- timed: book the morning / afternoon / evening flight; the cabin class is hidden.
- cancel: cancel the reservation for the trip to a city on a date.
- departure: report when the flight to a city on a date departs; nothing may change.
"""

import datetime
import random

CITIES = ["Boston", "Chicago", "Denver", "Seattle", "Miami", "Atlanta", "Dallas", "Phoenix", "Portland", "Austin",
          "Nashville", "Houston"]
FIRST = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana", "ivan", "jin", "kai", "lena", "mo", "nora",
         "omar", "pia", "raj", "sara", "tom", "uma", "vic", "wen", "yara", "zoe"]
LAST = ["lee", "kim", "garcia", "smith", "novak", "ito", "silva", "khan", "brown", "rossi", "muller", "dubois"]
PAYMENT_TYPES = ["credit card", "debit card", "gift card"]
KINDS = ["cheapest", "timed", "cancel", "departure"]
# Departure windows in minutes after midnight; the scenario instructions define the same periods.
PERIODS = {"morning": (6 * 60, 11 * 60 + 55), "afternoon": (12 * 60, 17 * 60 + 55), "evening": (18 * 60, 20 * 60 + 30)}
FIRST_DAY = datetime.date(2024, 6, 1)
LAST_ARRIVAL = 23 * 60 + 55
MIN_FLIGHTS, MAX_FLIGHTS = 6, 15


def generate_tasks(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [_task(rng, index) for index in range(count)]


def _task(rng: random.Random, index: int) -> dict:
    kind = KINDS[index % len(KINDS)]
    world = _World(rng)
    origin, destination = rng.sample(CITIES, 2)
    date = world.date()
    users = [world.user() for _ in range(3)]
    user_id = rng.choice(users)
    user = world.users[user_id]
    hello = f"Hi, I'm {user['name']}, my email is {user['email']}."
    oracle = [{"name": "find_user_id_by_email", "arguments": {"email": user["email"]}},
              {"name": "get_user_details", "arguments": {"user_id": user_id}}]

    if kind in ("cheapest", "timed"):
        goal, hidden, required, tail = _booking(rng, world, kind, user_id, origin, destination, date, hello)
    else:
        goal, hidden, required, tail = _trip(rng, world, kind, user_id, origin, destination, date, hello)
    oracle += tail

    world.fill_flights(origin, destination, date)
    for other_id in users:
        if other_id != user_id:
            for _ in range(rng.randint(1, 2)):
                world.reservation(other_id, rng.choice(list(world.flights)))
    return {"id": f"travel-{index:04d}", "group": f"{kind}:{origin}-{destination}", "goal": goal, "hidden": hidden,
            "initial_state": world.state(), "required_outputs": required, "oracle": oracle}


def _booking(rng, world, kind, user_id, origin, destination, date, hello):
    """A booking task: several flights on the route and day; the oracle books exactly one of them."""
    user = world.users[user_id]
    for _ in range(rng.randint(1, 2)):  # trips the traveller already has, on other routes
        while (route := tuple(rng.sample(CITIES, 2))) == (origin, destination):
            pass
        world.reservation(user_id, world.flight(*route, world.date()))
    search = {"name": "search_flights", "arguments": {"origin": origin, "destination": destination, "date": date}}
    payments = list(user["payment_methods"])

    if kind == "cheapest":
        cabin = "economy"
        flights = [world.flight(origin, destination, date) for _ in range(rng.randint(3, 4))]
        prices = rng.sample(range(79, 420), len(flights))
        for flight_id, price in zip(flights, prices):
            world.flights[flight_id]["prices"] = {"economy": price, "business": _business_price(rng, price)}
        by_price = sorted(flights, key=lambda f: world.flights[f]["prices"]["economy"])
        if rng.random() < 0.3:  # the cheapest flight is sold out in economy
            world.flights[by_price[0]]["seats"]["economy"] = 0
            by_price = by_price[1:]
        target = by_price[0]
        world.flights[target]["seats"]["economy"] = max(1, world.flights[target]["seats"]["economy"])
        payment_id = rng.choice(payments)
        goal = (f"{hello} Please book me the cheapest economy flight that still has seats from {origin} to "
                f"{destination} on {date}.")
        hidden = [{"keywords": ["pay", "payment", "card"], "reply": f"Please use my {_describe(user, payment_id)}."}]
        ask = {"name": "ask_user", "arguments": {"message": "Which payment method should I charge?"}}
    else:
        period = rng.choice(list(PERIODS))
        others = [p for p in PERIODS if p != period]
        slots = [period] + others + ([rng.choice(others)] if rng.random() < 0.5 else [])
        flights = [world.flight(origin, destination, date, period=slot) for slot in slots]
        target = flights[0]
        cabin = rng.choice(["economy", "business"])
        world.flights[target]["seats"][cabin] = max(1, world.flights[target]["seats"][cabin])
        payment_id = rng.choice(payments)
        goal = (f"{hello} I need the {period} flight from {origin} to {destination} on {date}. "
                f"Please charge my {_describe(user, payment_id)}.")
        hidden = [{"keywords": ["cabin", "class", "economy", "business"], "reply": f"{cabin.title()} class, please."}]
        ask = {"name": "ask_user", "arguments": {"message": "Which cabin class would you like, economy or business?"}}

    flight = world.flights[target]
    price = flight["prices"][cabin]
    payment = user["payment_methods"][payment_id]
    if "balance" in payment:
        payment["balance"] = max(payment["balance"], price + rng.randint(0, 15) * 10)
    reservation_id = f"R{world.next_reservation}"
    # The payment question comes right after seeing the payment methods; the cabin one after seeing the flights.
    oracle = [ask, search] if kind == "cheapest" else [search, ask]
    oracle += [{"name": "book_flight", "arguments": {"user_id": user_id, "flight_id": target, "cabin": cabin,
                                                     "payment_id": payment_id}},
               {"name": "final_answer", "arguments": {"answer": (
                   f"Booked flight {target} from {origin} to {destination} on {date}, departing {flight['departs']}, "
                   f"{cabin} class. Your reservation is {reservation_id}; {price} was charged to {payment_id}.")}}]
    return goal, hidden, [reservation_id], oracle


def _trip(rng, world, kind, user_id, origin, destination, date, hello):
    """A task about an existing trip: the traveller has it among other trips that look alike."""
    elsewhere = rng.choice([c for c in CITIES if c not in (origin, destination)])
    cabin = rng.choice(["economy", "business"])
    target_flight = world.flight(origin, destination, date)
    plans = [("target", target_flight, "booked")]
    clock = {world.flights[target_flight]["departs"]}  # decoys never depart at the asked-about time
    decoys = [
        (world.flight(origin, destination, world.date(avoid=date), avoid=clock), "booked"),  # same city, other day
        (world.flight(origin, elsewhere, date, avoid=clock), "booked"),  # same day, other city
        (world.flight(destination, origin, world.date(avoid=date), avoid=clock), "booked"),  # the trip home
    ]
    if rng.random() < 0.4:  # an earlier booking of the same trip, already cancelled
        decoys.append((world.flight(origin, destination, date, avoid=clock), "cancelled"))
    rng.shuffle(decoys)
    plans += [("decoy", flight_id, status) for flight_id, status in decoys[:rng.randint(2, 3)]]
    rng.shuffle(plans)
    oracle, target = [], None
    for role, flight_id, status in plans:
        reservation_id = world.reservation(user_id, flight_id, status=status,
                                           cabin=cabin if role == "target" else None)
        if target is None:
            oracle.append({"name": "get_reservation_details", "arguments": {"reservation_id": reservation_id}})
        if role == "target":
            target = reservation_id
    reservation = world.reservations[target]
    flight = world.flights[target_flight]
    if kind == "cancel":
        goal = f"{hello} Please cancel my reservation for the flight to {destination} on {date}."
        oracle += [{"name": "cancel_reservation", "arguments": {"reservation_id": target}},
                   {"name": "final_answer", "arguments": {"answer": (
                       f"Reservation {target} (flight {target_flight} to {destination} on {date}) is cancelled; "
                       f"{reservation['price']} will be refunded to {reservation['payment_id']}.")}}]
        return goal, [], [target], oracle
    goal = f"{hello} What time does my flight to {destination} on {date} depart?"
    oracle.append({"name": "final_answer", "arguments": {"answer": (
        f"Your flight {target_flight} to {destination} on {date} (reservation {target}) departs at "
        f"{flight['departs']}.")}})
    return goal, [], [flight["departs"]], oracle


class _World:
    """One task's users, flights and reservations, with ids unique within the task."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()
        self.users, self.flights, self.reservations = {}, {}, {}
        self.next_reservation = rng.randint(40000, 99000)

    def _fresh(self, make) -> str:
        while (value := make()) in self.used:
            pass
        self.used.add(value)
        return value

    def date(self, avoid: str | None = None) -> str:
        while (value := (FIRST_DAY + datetime.timedelta(days=self.rng.randint(0, 91))).isoformat()) == avoid:
            pass
        return value

    def user(self) -> str:
        rng = self.rng
        names = {user["name"] for user in self.users.values()}
        first, last = rng.choice(FIRST), rng.choice(LAST)
        while f"{first.title()} {last.title()}" in names:
            first, last = rng.choice(FIRST), rng.choice(LAST)
        user_id = self._fresh(lambda: f"{first}_{last}_{rng.randint(1000, 9999)}")
        payments = {}
        kinds = rng.sample(PAYMENT_TYPES, rng.randint(2, 3))
        if rng.random() < 0.4:  # a second card of a kind the traveller already has
            kinds.append(rng.choice(kinds))
        for kind in kinds:
            payment_id = self._fresh(lambda: f"{kind.replace(' ', '_')}_{rng.randint(100000, 999999)}")
            last4 = self._fresh(lambda: f"{rng.randint(0, 9999):04d}")
            payments[payment_id] = {"type": kind, "last4": last4}
            if kind == "gift card":
                payments[payment_id]["balance"] = rng.randint(0, 50) * 10
        self.users[user_id] = {"name": f"{first.title()} {last.title()}",
                               "email": f"{first}.{last}{rng.randint(1, 99)}@example.com",
                               "payment_methods": payments, "reservations": []}
        return user_id

    def flight(self, origin: str, destination: str, date: str, period: str | None = None,
               avoid: set[str] = frozenset()) -> str:
        """A new flight; it never leaves at the same time as another one on its route and day, nor at `avoid`."""
        rng = self.rng
        taken = set(avoid) | {f["departs"] for f in self.flights.values()
                              if (f["origin"], f["destination"], f["date"]) == (origin, destination, date)}
        low, high = PERIODS[period] if period else (PERIODS["morning"][0], PERIODS["evening"][1])
        while _clock(departs := rng.randrange(low, high + 1, 5)) in taken:
            pass
        arrives = departs + rng.randrange(60, min(235, LAST_ARRIVAL - departs + 1), 5)
        economy = rng.randint(79, 419)
        flight_id = self._fresh(lambda: f"FL{rng.randint(100, 999)}")
        self.flights[flight_id] = {
            "origin": origin, "destination": destination, "date": date, "departs": _clock(departs),
            "arrives": _clock(arrives), "prices": {"economy": economy, "business": _business_price(rng, economy)},
            "seats": {"economy": rng.choice([0, 1, 2, 3, 4, 5, 6, 8, 9]), "business": rng.randint(0, 4)}}
        return flight_id

    def fill_flights(self, origin: str, destination: str, date: str) -> None:
        """Add unrelated flights (other days on the route, the way back, other routes) up to a random size."""
        rng = self.rng
        wanted = max(MIN_FLIGHTS, min(MAX_FLIGHTS, len(self.flights) + rng.randint(1, 3)))
        while len(self.flights) < wanted:
            roll = rng.random()
            if roll < 0.35:
                self.flight(origin, destination, self.date(avoid=date))
            elif roll < 0.6:
                self.flight(destination, origin, date)
            else:
                self.flight(origin, rng.choice([c for c in CITIES if c not in (origin, destination)]), date)

    def reservation(self, user_id: str, flight_id: str, status: str = "booked", cabin: str | None = None) -> str:
        rng = self.rng
        cabin = cabin or rng.choice(["economy", "economy", "business"])
        reservation_id = self._fresh(lambda: f"R{rng.randint(10000, 39999)}")
        self.reservations[reservation_id] = {
            "user_id": user_id, "flight_id": flight_id, "cabin": cabin,
            "price": self.flights[flight_id]["prices"][cabin],
            "payment_id": rng.choice(list(self.users[user_id]["payment_methods"])), "status": status}
        self.users[user_id]["reservations"].append(reservation_id)
        return reservation_id

    def state(self) -> dict:
        return {"users": self.users, "flights": self.flights, "reservations": self.reservations,
                "next_reservation": self.next_reservation}


def _describe(user: dict, payment_id: str) -> str:
    payment = user["payment_methods"][payment_id]
    return f"{payment['type']} ending in {payment['last4']}"


def _business_price(rng: random.Random, economy: int) -> int:
    return int(round(economy * rng.uniform(2.2, 3.8) / 5.0)) * 5


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
