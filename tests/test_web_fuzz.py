"""2,000 bad actions per web scenario (and a MiniWoB++ task): nothing escapes, each is rejected with a
reason, and the page, the form values and the site's state are exactly as they were."""

import json
import random

import pytest

import trajalign  # noqa: F401

ACTIONS_PER_SCENARIO = 2000
# The page as data. MiniWoB++'s reward display (#reward-display) counts the seconds on its own, so it is left out.
PAGE_STATE = """() => JSON.stringify({
  url: location.href, scroll: [scrollX, scrollY],
  html: (() => { const copy = document.documentElement.cloneNode(true);
                 copy.querySelectorAll('#reward-display').forEach((e) => e.remove()); return copy.outerHTML; })(),
  focused: document.activeElement ? document.activeElement.outerHTML.slice(0, 200) : null,
  values: Array.from(document.querySelectorAll('input, select, textarea')).map(
    (e) => [e.name || e.id, e.value, e.checked, e.selectedIndex]),
  wob: typeof WOB_DONE_GLOBAL === 'undefined' ? null : [WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL],
})"""


def bad_actions(rng: random.Random, elements: dict[str, dict], count: int):
    """Actions that must all be refused: malformed, unknown, ill-typed, or impossible on this page."""
    ids = list(elements)
    not_text = [i for i, e in elements.items() if not e.get("editable")]
    not_select = [i for i, e in elements.items() if e.get("tag") != "select"]
    selects = [i for i, e in elements.items() if e.get("tag") == "select"]
    names = ["click", "type", "select", "scroll", "go_back", "answer"]
    makers = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))),
        lambda: rng.choice("ab{[(\"'") * 1_000_000,
        lambda: '{"name": "' + "x" * 1_000_000 + '"}',
        lambda: json.dumps({"name": "click", "arguments": {"id": rng.choice(ids)}})[: rng.randrange(1, 30)],
        lambda: json.dumps({"name": f"zz_{rng.randrange(10**6)}", "arguments": {}}),
        lambda: f"hover({rng.choice(ids)})",
        lambda: f"click(id=nowhere-{rng.randrange(10**6)})",
        lambda: f'click("e{rng.randrange(10**4, 10**6)}")',
        lambda: f"click({rng.randrange(10**4, 10**6)})",
        lambda: json.dumps({"name": "click", "arguments": {"id": rng.choice([5.5, [1], {"a": 1}, None, True])}}),
        lambda: json.dumps({"name": "type", "arguments": {"id": rng.choice(ids), "text": rng.choice([5, None, [1]])}}),
        lambda: f'type({rng.choice(not_text)}, "hello")' if not_text else "type()",
        lambda: f'select({rng.choice(not_select)}, "x")' if not_select else "select()",
        lambda: f'select({rng.choice(selects)}, "no option {rng.randrange(100)}")' if selects else "select(1, 2, 3)",
        lambda: rng.choice(["scroll(left)", "scroll()", 'scroll("sideways")', "scroll(up, 3)", "go_back(1)",
                            "answer()", "answer(text=None)", "click()", f'click({rng.choice(ids)}, force=True)',
                            "type(e1)", '{"name": "answer", "arguments": {"text": 42}}']),
        lambda: "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD7FF),
                                        rng.randrange(0xD800, 0xE000), rng.randrange(0x1F300, 0x1FAFF)]))
                        for _ in range(rng.randint(1, 200))),
        lambda: "[" * rng.randint(100, 20000) + "]" * rng.randint(0, 100),
        lambda: json.dumps({"name": rng.choice(names), "arguments": {"deep": [[[[[["x"]]]]]] * 3}}),
        lambda: json.dumps({"name": {"nested": [1, 2, {"x": None}]}, "arguments": {}}),
        lambda: rng.choice(["", " ", "\n\t", "null", "42", "true", '"text"', "{}", "[]", "()", "f()(", "a=1"]),
        lambda: rng.choice(names) + "(" + ", ".join(["1"] * rng.randint(4, 50)) + ")",
        lambda: f"click(__import__('os').system('touch /tmp/pwned-{rng.randrange(100)}'))",
        lambda: f"type({rng.choice(ids)}, open('/etc/passwd').read())",
    ]
    for _ in range(count):
        yield rng.choice(makers)()


def _page_state(env) -> str:
    page_state = env.session.call(env.session.page.evaluate(PAGE_STATE), 30)
    return page_state + json.dumps(getattr(getattr(env, "site", None), "state", None), sort_keys=True, default=str)


def _fuzz(env, rng):
    elements = env.snapshot.elements
    before = _page_state(env)
    rejected = 0
    for action in bad_actions(rng, elements, ACTIONS_PER_SCENARIO):
        observation, reward, terminated, truncated, info = env.step(action)
        assert info["action_error"], (repr(action)[:200], observation[:300])
        assert "Last action error: " + info["action_error"][:50] in observation
        assert env.observation_space.contains(observation) and reward == 0.0 and not terminated and not truncated
        assert info["status"] == "running"
        observation.encode("utf-8")  # every observation can be written to JSONL
        rejected += 1
        if rejected % 500 == 0:
            assert _page_state(env) == before, f"the page changed after {rejected} bad actions"
    assert rejected == ACTIONS_PER_SCENARIO and info["invalid_actions"] == ACTIONS_PER_SCENARIO
    assert _page_state(env) == before


@pytest.fixture
def unlimited(request):
    """Lift an env's turn and invalid-action limits for the test, then put them back."""
    def lift(env):
        limits = env.max_turns, env.max_invalid_actions
        env.max_turns = env.max_invalid_actions = 10**6
        request.addfinalizer(lambda: (setattr(env, "max_turns", limits[0]),
                                      setattr(env, "max_invalid_actions", limits[1])))
        return env
    return lift


@pytest.mark.parametrize("name", ["shop", "accounts", "wiki"])
def test_fuzzing_never_escapes_and_never_changes_the_page(name, shared_env, unlimited):
    env = unlimited(shared_env(name))
    scenario = env.scenario
    # Fuzz on a page with forms or tables: the oracle's way there, up to its last type/select.
    tasks = scenario.tasks_in("train")
    task = next((t for t in tasks if any(c.name in ("select", "type") for c in t.oracle)), tasks[0])
    env.reset(seed=0, options={"task_id": task.id})
    steps = [c for c in task.oracle if c.name != "answer"]
    stop = max((i for i, c in enumerate(steps) if c.name in ("select", "type")), default=len(steps))
    for call in steps[:stop]:
        assert env.step(call.to_text())[-1]["action_error"] is None
    _fuzz(env, random.Random(1234))


def test_fuzzing_a_miniwob_task(shared_env, unlimited):
    env = unlimited(shared_env("miniwob"))
    env.reset(options={"task_id": "login-user/0"})
    _fuzz(env, random.Random(99))
