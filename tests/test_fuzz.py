"""5,000 bad actions per domain: nothing escapes, each is rejected with a reason, state is untouched."""

import json
import random

import gymnasium as gym

import trajalign  # noqa: F401

ACTIONS_PER_DOMAIN = 5000


def bad_actions(rng: random.Random, tools: list[dict], count: int):
    names = [tool["function"]["name"] for tool in tools]
    valid = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
        lambda: rng.choice("ab{[(\"'") * 1_000_000,
        lambda: '{"name": "' + "x" * 1_000_000 + '"}',
        lambda: _truncated_call(rng, names),
        lambda: json.dumps({"name": f"zz_{rng.randrange(10**6)}", "arguments": {}}),
        lambda: f"unknown_tool_{rng.randrange(100)}(a=1)",
        lambda: _wrong_types(rng, valid),
        lambda: "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD7FF),
                                        rng.randrange(0xD800, 0xE000), rng.randrange(0x1F300, 0x1FAFF)]))
                        for _ in range(rng.randint(1, 200))),
        lambda: "[" * rng.randint(100, 20000) + "]" * rng.randint(0, 100),
        lambda: json.dumps({"name": rng.choice(names), "arguments": _nested(rng, 30)}),
        lambda: json.dumps({"name": {"nested": [1, 2, {"x": None}]}, "arguments": {}}),
        lambda: rng.choice(["", " ", "\n\t", "null", "42", "true", '"text"', "{}", "[]", "()", "f()(", "a=1"]),
        lambda: rng.choice(names) + "(" + ", ".join(["1"] * rng.randint(5, 50)) + ")",
        lambda: f"{rng.choice(names)}(x=__import__('os').getcwd())",
    ]
    for _ in range(count):
        yield rng.choice(makers)()


def _truncated_call(rng, names):
    text = json.dumps({"name": rng.choice(names), "arguments": {"value": "abc", "n": [1, 2, 3]}})
    return text[: rng.randrange(1, len(text) - 1)]


def _wrong_types(rng, valid):
    name = rng.choice([n for n, params in valid.items() if params.get("properties")])
    properties = valid[name]["properties"]
    arguments = {}
    for parameter, schema in properties.items():
        kind = schema.get("type")
        arguments[parameter] = {"string": rng.choice([5, 2.5, [1], {"a": 1}, None]),
                                "number": rng.choice(["abc", [1], {"a": 1}]),
                                "integer": rng.choice(["abc", 1.5, [1]]),
                                "boolean": rng.choice([[1], {"a": 1}, "maybe"]),
                                "array": rng.choice([7, {"a": 1}, "not a list"])}.get(kind, [{"bad": 1}])
        if "enum" in schema:
            arguments[parameter] = "not-one-of-the-options"
    if rng.random() < 0.3:
        arguments["unexpected_argument"] = 1
    return json.dumps({"name": name, "arguments": arguments})


def _nested(rng, depth):
    value = "leaf"
    for _ in range(depth):
        value = rng.choice([{"k": value}, [value]])
    return {"deep": value}


def test_fuzzing_never_escapes_and_never_changes_state(tool_use_scenario):
    env = gym.make("trajalign/ToolUse-v0", scenario=tool_use_scenario, max_invalid_actions=50)
    rng = random.Random(1234)
    observation, info = env.reset(seed=0)
    pristine = json.dumps(env.unwrapped.state, sort_keys=True)
    rejected = 0
    for action in bad_actions(rng, info["tools"], ACTIONS_PER_DOMAIN):
        observation, reward, terminated, truncated, info = env.step(action)
        assert info["action_error"], (action[:200], observation)
        assert observation.startswith("Error: ") and env.observation_space.contains(observation)
        assert reward == 0.0
        assert json.dumps(env.unwrapped.state, sort_keys=True) == pristine, action[:200]
        observation.encode("utf-8")  # every observation can be written to JSONL
        rejected += 1
        if terminated or truncated:
            assert info["status"] in ("invalid_action_limit", "truncated")
            observation, info = env.reset(seed=rejected)
            pristine = json.dumps(env.unwrapped.state, sort_keys=True)
    assert rejected == ACTIONS_PER_DOMAIN
