from typing import Literal

import pytest

from trajalign.envs import ActionError, ToolCall
from trajalign.envs.tools import ToolDefinitionError, tool_from_function


def transfer(state: dict, account_id: str, amount: float, currency: Literal["EUR", "USD"] = "EUR",
             memo: str | None = None) -> dict:
    """Move money out of an account.

    More detail that is not part of the summary.

    Args:
        account_id: the source account.
        amount: how much to move.
        currency: the currency of `amount`.
    """
    return {}


def test_schema_comes_from_signature_and_docstring():
    tool = tool_from_function(transfer)
    schema = tool.openai_schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "transfer"
    assert function["description"] == "Move money out of an account."
    parameters = function["parameters"]
    assert parameters["required"] == ["account_id", "amount"]
    assert "state" not in parameters["properties"]
    assert parameters["properties"]["account_id"] == {"type": "string", "description": "the source account."}
    assert parameters["properties"]["amount"]["type"] == "number"
    assert parameters["properties"]["currency"]["enum"] == ["EUR", "USD"]
    assert parameters["additionalProperties"] is False
    assert tool.takes_state


def test_bind_validates_and_fills_defaults():
    tool = tool_from_function(transfer)
    bound = tool.bind(ToolCall(name="transfer", positional=["A1"], arguments={"amount": "12.5"}))
    assert bound == {"account_id": "A1", "amount": 12.5, "currency": "EUR", "memo": None}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ToolCall(name="transfer", arguments={"amount": 1}), "missing argument 'account_id'"),
        (ToolCall(name="transfer", arguments={"account_id": 5, "amount": 1}), "'account_id': Input should be a valid string"),
        (ToolCall(name="transfer", arguments={"account_id": "A", "amount": 1, "colour": "red"}), "unexpected argument 'colour'"),
        (ToolCall(name="transfer", arguments={"account_id": "A", "amount": 1, "currency": "GBP"}), "'currency'"),
        (ToolCall(name="transfer", positional=["A", 1, "EUR", "m", "extra"]), "takes 4 argument"),
        (ToolCall(name="transfer", positional=["A"], arguments={"account_id": "B", "amount": 1}), "twice"),
    ],
)
def test_bind_rejects_bad_arguments(call, message):
    with pytest.raises(ActionError, match=message):
        tool_from_function(transfer).bind(call)


def test_unannotated_parameter_is_a_definition_error():
    def lookup(state, key):
        """Look something up."""

    with pytest.raises(ToolDefinitionError, match="parameter 'key' has no type annotation"):
        tool_from_function(lookup)
