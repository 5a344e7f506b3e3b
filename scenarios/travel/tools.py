"""Flight-booking desk tools. `state` holds `users`, `flights`, `reservations` and `next_reservation`.

New reservation ids come from the `next_reservation` counter, so the same bookings made in the
same order always get the same ids.
"""

from typing import Literal

from trajalign.envs import ToolError


def find_user_id_by_email(state: dict, email: str) -> str:
    """Look up a traveller's user id by their email address.

    Args:
        email: the traveller's email, e.g. "ana.lee@example.com".
    """
    wanted = email.strip().lower()
    for user_id, user in state["users"].items():
        if user["email"] == wanted:
            return user_id
    raise ToolError(f"no traveller with email {email!r}")


def get_user_details(state: dict, user_id: str) -> dict:
    """Get a traveller's name, payment methods (with payment ids) and reservation ids.

    Args:
        user_id: the id returned by find_user_id_by_email.
    """
    user = _user(state, user_id)
    return {"user_id": user_id, "name": user["name"], "payment_methods": user["payment_methods"],
            "reservations": user["reservations"]}


def search_flights(state: dict, origin: str, destination: str, date: str) -> list[dict]:
    """List the flights from one city to another on a date, with prices and seats left per cabin.

    Args:
        origin: the departure city, e.g. "Boston".
        destination: the arrival city, e.g. "Denver".
        date: the travel date as YYYY-MM-DD, e.g. "2024-06-14".
    """
    origin, destination, date = origin.strip().lower(), destination.strip().lower(), date.strip()
    found = [
        {"flight_id": flight_id, "departs": f["departs"], "arrives": f["arrives"], "prices": f["prices"],
         "seats_left": f["seats"]}
        for flight_id, f in state["flights"].items()
        if f["origin"].lower() == origin and f["destination"].lower() == destination and f["date"] == date
    ]
    found.sort(key=lambda f: f["departs"])
    return found


def get_reservation_details(state: dict, reservation_id: str) -> dict:
    """Get a reservation's flight (route, date, times), cabin, price paid, payment id and status.

    Args:
        reservation_id: a reservation id such as "R12345".
    """
    reservation = _reservation(state, reservation_id)
    flight = state["flights"][reservation["flight_id"]]
    return {"reservation_id": reservation_id, "flight_id": reservation["flight_id"], "origin": flight["origin"],
            "destination": flight["destination"], "date": flight["date"], "departs": flight["departs"],
            "arrives": flight["arrives"], "cabin": reservation["cabin"], "price": reservation["price"],
            "payment_id": reservation["payment_id"], "status": reservation["status"]}


def book_flight(state: dict, user_id: str, flight_id: str, cabin: Literal["economy", "business"],
                payment_id: str) -> dict:
    """Book one seat on a flight and charge the payment method. The charge is made at once.

    Args:
        user_id: the traveller who flies.
        flight_id: the flight to book, from search_flights.
        cabin: the cabin class: "economy" or "business".
        payment_id: one of the traveller's payment ids, from get_user_details.
    """
    user = _user(state, user_id)
    flight = _flight(state, flight_id)
    payment = user["payment_methods"].get(payment_id)
    if payment is None:
        raise ToolError(f"user {user_id} has no payment method {payment_id!r}")
    if flight["seats"][cabin] <= 0:
        raise ToolError(f"flight {flight_id} has no {cabin} seats left")
    price = flight["prices"][cabin]
    if "balance" in payment:
        if payment["balance"] < price:
            raise ToolError(f"gift card {payment_id} has balance {payment['balance']}, less than the price {price}")
        payment["balance"] -= price
    flight["seats"][cabin] -= 1
    number = state["next_reservation"]
    while f"R{number}" in state["reservations"]:
        number += 1
    reservation_id = f"R{number}"
    state["next_reservation"] = number + 1
    state["reservations"][reservation_id] = {"user_id": user_id, "flight_id": flight_id, "cabin": cabin,
                                             "price": price, "payment_id": payment_id, "status": "booked"}
    user["reservations"].append(reservation_id)
    return {"reservation_id": reservation_id, "flight_id": flight_id, "cabin": cabin, "price": price,
            "payment_id": payment_id, "status": "booked"}


def cancel_reservation(state: dict, reservation_id: str) -> dict:
    """Cancel a booked reservation and refund the price to its payment method. This cannot be undone.

    Args:
        reservation_id: the reservation to cancel.
    """
    reservation = _reservation(state, reservation_id)
    if reservation["status"] != "booked":
        raise ToolError(f"reservation {reservation_id} is already {reservation['status']}")
    reservation["status"] = "cancelled"
    state["flights"][reservation["flight_id"]]["seats"][reservation["cabin"]] += 1
    payment = state["users"][reservation["user_id"]]["payment_methods"].get(reservation["payment_id"])
    if payment is not None and "balance" in payment:
        payment["balance"] += reservation["price"]
    return {"reservation_id": reservation_id, "status": "cancelled", "refund": reservation["price"],
            "payment_id": reservation["payment_id"]}


def _user(state: dict, user_id: str) -> dict:
    try:
        return state["users"][user_id]
    except KeyError:
        raise ToolError(f"no user {user_id!r}") from None


def _flight(state: dict, flight_id: str) -> dict:
    try:
        return state["flights"][flight_id]
    except KeyError:
        raise ToolError(f"no flight {flight_id!r}") from None


def _reservation(state: dict, reservation_id: str) -> dict:
    try:
        return state["reservations"][reservation_id]
    except KeyError:
        raise ToolError(f"no reservation {reservation_id!r}") from None
