import pytest

from trajalign.envs import ActionError, parse_action


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_order", "arguments": {"order_id": "#W1"}}',
        '{"name": "get_order", "arguments": "{\\"order_id\\": \\"#W1\\"}"}',
        '{"type": "function", "function": {"name": "get_order", "arguments": {"order_id": "#W1"}}}',
        '{"tool_calls": [{"function": {"name": "get_order", "arguments": "{\\"order_id\\": \\"#W1\\"}"}}]}',
        'get_order(order_id="#W1")',
        "get_order(order_id='#W1')",
        '<tool_call>{"name": "get_order", "arguments": {"order_id": "#W1"}}</tool_call>',
        'I will look it up.\n```json\n{"name": "get_order", "arguments": {"order_id": "#W1"}}\n```',
        'Action: get_order(order_id="#W1")',
    ],
)
def test_accepted_forms_parse_to_the_same_call(text):
    call = parse_action(text)
    assert call.name == "get_order"
    assert call.arguments == {"order_id": "#W1"}


def test_positional_arguments_are_kept_for_binding():
    call = parse_action('return_items("#W1", ["I1", "I2"])')
    assert call.positional == ["#W1", ["I1", "I2"]]
    assert call.arguments == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Empty action"),
        ("{not json", "Invalid JSON"),
        ('{"arguments": {}}', "no 'name'"),
        ('{"name": "x", "arguments": [1]}', "'arguments' must be an object"),
        ('[{"name": "a"}, {"name": "b"}]', "exactly one tool call"),
        ("get_order(order_id=W1)", "must be a literal"),
        ("__import__('os').system('true')", "single call like"),
        ("get_order(**{'a': 1})", "**kwargs"),
        ("just some words", "Could not parse"),
        ("[" * 5000, "Invalid JSON"),
        ("f(" * 5000, "Could not parse"),
    ],
)
def test_bad_actions_raise_action_error_with_a_reason(text, message):
    with pytest.raises(ActionError, match=message.replace("*", r"\*").replace("(", r"\(")):
        parse_action(text)


def test_model_text_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ActionError):
        parse_action(f"open({str(marker)!r}, 'w').write('x')")
    with pytest.raises(ActionError):
        parse_action(f"f(x=open({str(marker)!r}, 'w'))")
    assert not marker.exists()
