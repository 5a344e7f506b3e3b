"""Retail customer-service tools. `state` holds `users` and `orders` keyed by id."""

from typing import Literal

from trajalign.envs import ToolError


def find_user_id_by_email(state: dict, email: str) -> str:
    """Look up a customer's user id by their email address.

    Args:
        email: the customer's email, e.g. "ana.lee@example.com".
    """
    for user_id, user in state["users"].items():
        if user["email"] == email.strip().lower():
            return user_id
    raise ToolError(f"no customer with email {email!r}")


def get_user_details(state: dict, user_id: str) -> dict:
    """Get a customer's name, email and the ids of their orders.

    Args:
        user_id: the id returned by find_user_id_by_email.
    """
    user = _user(state, user_id)
    return {"user_id": user_id, "name": user["name"], "email": user["email"], "orders": user["orders"]}


def get_order_details(state: dict, order_id: str) -> dict:
    """Get an order's status, shipping address and items (with item ids and prices).

    Args:
        order_id: an order id such as "#W1234567".
    """
    order = _order(state, order_id)
    return {"order_id": order_id, **order}


def cancel_order(state: dict, order_id: str, reason: Literal["no longer needed", "ordered by mistake"]) -> dict:
    """Cancel a pending order. This cannot be undone.

    Args:
        order_id: the order to cancel.
        reason: why the customer cancels: "no longer needed" or "ordered by mistake".
    """
    order = _order(state, order_id)
    if order["status"] != "pending":
        raise ToolError(f"order {order_id} is {order['status']}; only pending orders can be cancelled")
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    return {"order_id": order_id, "status": "cancelled"}


def modify_order_address(state: dict, order_id: str, address: str) -> dict:
    """Change the shipping address of a pending order.

    Args:
        order_id: the order to change.
        address: the full new address, exactly as the customer gave it.
    """
    order = _order(state, order_id)
    if order["status"] != "pending":
        raise ToolError(f"order {order_id} is {order['status']}; only pending orders can change address")
    if not address.strip():
        raise ToolError("the address is empty")
    order["address"] = address.strip()
    return {"order_id": order_id, "address": order["address"]}


def return_items(state: dict, order_id: str, item_ids: list[str]) -> dict:
    """Return items of a delivered order. This cannot be undone.

    Args:
        order_id: the delivered order.
        item_ids: ids of the items to return, from get_order_details.
    """
    order = _order(state, order_id)
    if order["status"] != "delivered":
        raise ToolError(f"order {order_id} is {order['status']}; only delivered orders can be returned")
    known = {item["item_id"]: item for item in order["items"]}
    unknown = [item_id for item_id in item_ids if item_id not in known]
    if unknown or not item_ids:
        raise ToolError(f"order {order_id} has no items {unknown or item_ids}")
    for item_id in item_ids:
        known[item_id]["returned"] = True
    order["status"] = "return requested"
    refund = round(sum(known[item_id]["price"] for item_id in item_ids), 2)
    return {"order_id": order_id, "status": order["status"], "refund": refund}


def _user(state: dict, user_id: str) -> dict:
    try:
        return state["users"][user_id]
    except KeyError:
        raise ToolError(f"no user {user_id!r}") from None


def _order(state: dict, order_id: str) -> dict:
    try:
        return state["orders"][order_id]
    except KeyError:
        raise ToolError(f"no order {order_id!r}") from None
