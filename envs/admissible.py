"""Admissible actions: a text environment as a discrete choice among candidate actions.

Classic RL agents (PPO with a small network, DRRN) cannot write tool calls. Text-game benchmarks
give them the *admissible actions* of each state instead, and the agent picks one. This wrapper
does the same for trajalign environments:

- Tool use (`ToolUseEnv`): candidates are the calls of the scenario's tools whose arguments come
  from what the agent has seen (the goal, tool outputs, the user's replies, schema enums), plus
  questions to the user and answers quoting the latest output. A candidate is *admissible* when
  the tool accepts it: each one is dry-run on a copy of the episode state and dropped if it
  raises (as a text game's engine lists only valid commands). Nothing hidden (the oracle, the
  goal state) is used to make or rank candidates.
- Any other env whose `info["available_actions"]` lists action strings (a web env can list
  `click(id)` per element): those strings are the candidates.

Observation: a flat `Box` of `max_candidates` slots of [present, features...] followed by context
features (all in [0, 1]); see `CANDIDATE_FEATURES` and `CONTEXT_FEATURES`. Action:
`Discrete(max_candidates)`; choosing an empty slot sends an action the env rejects (an invalid
action). `info` carries the candidate texts (`candidates`), the text sent (`action_text`) and the
wrapped env's observation text (`text_observation`).

Reward shaping (off by default): `shaping=c` adds c·(Φ(s') − Φ(s)), a potential-based term
(Ng, Harada and Russell 1999: it leaves the optimal policy unchanged) where Φ is half the share of
the task's required answer facts seen in observations so far plus half the share of the goal
state's changes made (minus wrong changes). It uses the task's success check, like the reward.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from trajalign.envs.actions import ActionError, ToolCall, parse_action
from trajalign.envs.scenario import ASK_USER, FINAL_ANSWER, copy_state

MAX_TOOLS = 16  # tool one-hot width (a scenario's tools beyond 16 share the last slot)
ARG_SLOTS = 3  # arguments described per candidate
ARG_FEATURES = 10
CALL_FEATURES = 4
CANDIDATE_FEATURES = MAX_TOOLS + ARG_SLOTS * ARG_FEATURES + CALL_FEATURES
CONTEXT_FEATURES = 5 + MAX_TOOLS
SLOT_WIDTH = 1 + CANDIDATE_FEATURES

_STOPWORDS = frozenset("""a an and are as at be but by can could do does for from have i if in into is it its me my
no not of on or our please should so that the their them then there these this to up was we what when where which
who will with would you your version newest latest file files folder""".split())
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PATH = re.compile(r"(?<![\w])/[\w.\-/]+")
_FILENAME = re.compile(r"\b[\w-]+\.[A-Za-z0-9]{1,5}\b")
_ID = re.compile(r"#?\b(?=[\w-]*\d)[A-Za-z0-9][\w-]*\b")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")
_QUOTED = re.compile(r"\"([^\"]{1,80})\"|'([^']{1,80})'")
_TAIL = re.compile(r"\b(?:is|to|in|it|use)\s+(.{3,80}?)\s*[.!?]?$")


@dataclass
class Span:
    """A value the agent has seen, and where."""

    value: Any
    source: str  # goal | user | tool | instructions
    turn: int  # the observation it came from (0: the goal)
    key: str = ""  # the JSON key it sat under, if any
    last: bool = False  # last element of its JSON list
    phrase: bool = False  # the phrase a user's reply gives ("My new address is <phrase>.")
    identity: str = field(init=False)  # the value as JSON: spans with the same value are one candidate value

    def __post_init__(self) -> None:
        self.identity = json.dumps(self.value)


@dataclass
class Candidate:
    text: str
    features: np.ndarray


@dataclass
class _History:
    spans: list[Span] = field(default_factory=list)
    user_words: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    tool_counts: dict[str, int] = field(default_factory=dict)
    observations: list[str] = field(default_factory=list)
    turn: int = 0
    last_error: bool = False
    last_role: str = "user"


class AdmissibleActionEnv(gym.Env):
    """`env` as a discrete choice among up to `max_candidates` admissible actions (see the module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, env: gym.Env, max_candidates: int = 32, shaping: float = 0.0, values_per_argument: int = 6):
        self.env = env
        self.max_candidates = max_candidates
        self.shaping = shaping
        self.values_per_argument = values_per_argument
        size = max_candidates * SLOT_WIDTH + CONTEXT_FEATURES
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), np.float32)
        self.action_space = gym.spaces.Discrete(max_candidates)
        self._history = _History()
        self._candidates: list[Candidate] = []
        self._info: dict[str, Any] = {}
        self._potential = 0.0
        self._start_state: Any = {}  # the episode's state at reset, for the shaping potential
        self._admissible: dict[tuple[bytes, str], bool] = {}  # (state digest, call) -> dry-run verdict
        self._ranked: dict[tuple[str, str], list[Span]] = {}  # (parameter, type) -> spans, best first; per step

    # -- gymnasium --------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        observation, info = self.env.reset(seed=seed, options=options)
        self._info = dict(info)
        self._history = _History(observations=[observation])
        self._admissible.clear()
        self._history.spans += _spans(observation, "goal", 0)
        self._history.spans += _spans(info.get("instructions", "") or "", "instructions", 0, whole=False)
        if self.shaping:
            self._start_state = copy_state(_checked_state(self.env.unwrapped))
        self._potential = self._progress() if self.shaping else 0.0
        return self._observe(observation)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        index = int(action)
        text = self._candidates[index].text if 0 <= index < len(self._candidates) else "(no action in this slot)"
        observation, reward, terminated, truncated, info = self.env.step(text)
        history = self._history
        history.turn += 1
        history.calls.append(text)
        name = _tool_name(text)
        history.tool_counts[name] = history.tool_counts.get(name, 0) + 1
        history.last_error = info.get("action_error") is not None
        history.last_role = info.get("observation_role", "tool")
        history.observations.append(observation)
        if not history.last_error:
            source = "user" if history.last_role == "user" else "tool"
            history.spans += _spans(observation, source, history.turn)
            if source == "user":
                history.user_words |= _words(observation)
        self._info.update(info)
        shaped = float(reward)
        if self.shaping:
            potential = self._progress()
            shaped += self.shaping * (potential - self._potential)
            self._potential = potential
        features, out_info = self._observe(observation)
        out_info["action_text"] = text
        out_info["env_reward"] = float(reward)
        return features, shaped, terminated, truncated, out_info

    def close(self) -> None:
        self.env.close()

    # -- candidates and features -------------------------------------------------------------------

    def _observe(self, observation: str) -> tuple[np.ndarray, dict[str, Any]]:
        listed = self._info.get("available_actions")
        if listed is not None:
            self._candidates = self._listed_candidates(list(listed))
        elif hasattr(self.env.unwrapped, "scenario") and hasattr(self.env.unwrapped, "state"):
            self._candidates = self._tool_candidates()
        else:
            raise TypeError(f"{type(self.env.unwrapped).__name__} neither is a tool-use env nor lists "
                            "info['available_actions']; AdmissibleActionEnv cannot make candidates for it")
        features = np.zeros(self.observation_space.shape, np.float32)
        for slot, candidate in enumerate(self._candidates):
            start = slot * SLOT_WIDTH
            features[start] = 1.0
            features[start + 1:start + SLOT_WIDTH] = candidate.features
        features[self.max_candidates * SLOT_WIDTH:] = self._context()
        info = {**self._info, "candidates": [c.text for c in self._candidates], "text_observation": observation}
        return features, info

    def _context(self) -> np.ndarray:
        history, env = self._history, self.env.unwrapped
        context = np.zeros(CONTEXT_FEATURES, np.float32)
        max_turns = getattr(env, "max_turns", None) or self._info.get("max_turns") or 16
        max_invalid = getattr(env, "max_invalid_actions", None) or 4
        context[0] = min(1.0, history.turn / max_turns)
        context[1] = min(1.0, getattr(env, "invalid_actions", 0) / max_invalid)
        context[2] = float(history.last_error)
        context[3] = float(history.last_role == "user" and history.turn > 0)
        context[4] = len(self._candidates) / self.max_candidates
        for name, count in history.tool_counts.items():
            context[5 + self._tool_index(name)] = min(1.0, count / 3)
        return context

    def _tool_index(self, name: str) -> int:
        names = [schema["function"]["name"] for schema in self._info.get("tools", [])]
        return min(names.index(name), MAX_TOOLS - 1) if name in names else MAX_TOOLS - 1

    def _listed_candidates(self, actions: list[str]) -> list[Candidate]:
        goal_words = _words(self._history.observations[0])
        candidates = []
        for text in actions[: self.max_candidates]:
            features = np.zeros(CANDIDATE_FEATURES, np.float32)
            verb = text.split("(", 1)[0].strip().lower()
            features[zlib.crc32(verb.encode("utf-8")) % MAX_TOOLS] = 1.0
            words = _words(text)
            features[MAX_TOOLS] = len(words & goal_words) / max(1, len(words))
            features[MAX_TOOLS + 1] = float(text in self._history.calls)
            candidates.append(Candidate(text, features))
        return candidates

    def _tool_candidates(self) -> list[Candidate]:
        env = self.env.unwrapped
        self._ranked.clear()
        per_tool: list[Iterator[tuple[ToolCall, list[Span | None]]]] = []
        for schema in self._info.get("tools", []):
            function = schema["function"]
            name = function["name"]
            properties = function.get("parameters", {}).get("properties", {})
            if name == FINAL_ANSWER:
                per_tool.append(iter(self._answers()))
            elif name == ASK_USER:
                per_tool.append(iter(self._questions()))
            else:
                per_tool.append(self._calls(name, properties))
        seen: set[str] = set()
        chosen: list[Candidate] = []
        digest = hashlib.blake2b(pickle.dumps(env.state, pickle.HIGHEST_PROTOCOL), digest_size=16).digest()
        # Round-robin over tools, so every tool keeps some of its best-ranked calls within max_candidates.
        for item in itertools.chain.from_iterable(itertools.zip_longest(*per_tool)):
            if item is None:
                continue
            call, spans = item
            text = call.to_text()
            if text in seen:
                continue
            verdict = self._admissible.get((digest, text))
            if verdict is None:
                verdict = self._admissible[(digest, text)] = _admissible(env, call)
            if not verdict:
                continue
            seen.add(text)
            chosen.append(Candidate(text, self._features(call, spans)))
            if len(chosen) == self.max_candidates:
                break
        return chosen

    def _calls(self, name: str, properties: dict[str, Any]) -> Iterator[tuple[ToolCall, list[Span | None]]]:
        """The tool's calls from the best few values of each argument (made lazily: most are never needed)."""
        pools = []
        for position, (parameter, schema) in enumerate(properties.items()):
            pool = self._values(parameter, schema)[: max(1, self.values_per_argument - position)]
            if not pool:
                return  # nothing seen can fill this argument yet
            pools.append([(parameter, value, span) for value, span in pool])
        # Best combinations first: by the sum of the arguments' ranks.
        for ranks in sorted(itertools.product(*(range(len(pool)) for pool in pools)), key=lambda r: (sum(r), r)):
            combination = [pool[rank] for pool, rank in zip(pools, ranks)]
            arguments = {parameter: value for parameter, value, _ in combination}
            yield ToolCall(name=name, arguments=arguments), [span for _, _, span in combination]

    def _values(self, parameter: str, schema: dict[str, Any]) -> list[tuple[Any, Span | None]]:
        """Values for one argument, best first: enum values, else seen values of the right type."""
        if "enum" in schema:
            values = list(schema["enum"])
            values.sort(key=lambda value: -len(_words(str(value)) & self._history.user_words))
            return [(value, Span(value, "enum", self._history.turn)) for value in values]
        kind = schema.get("type", "string")
        if (parameter, kind) not in self._ranked:
            spans = self._history.spans
            if kind == "array":
                spans = [span for span in spans if isinstance(span.value, str) and span.source == "tool"
                         and _ID.fullmatch(span.value)]
            elif kind in ("integer", "number"):
                spans = [span for span in spans if _as_number(span.value, kind) is not None]
            else:
                spans = [span for span in spans if isinstance(span.value, str) and 0 < len(span.value) <= 200]
            self._ranked[(parameter, kind)] = self._rank(parameter, spans)[: self.values_per_argument]
        ranked = self._ranked[(parameter, kind)]
        if kind == "array":
            return [([span.value], span) for span in ranked]
        if kind in ("integer", "number"):
            return [(_as_number(span.value, kind), span) for span in ranked]
        return [(span.value, span) for span in ranked]

    def _rank(self, parameter: str, spans: list[Span]) -> list[Span]:
        """Deduplicated by value; spans under a matching JSON key first, then the most recent."""
        words = set(parameter.lower().split("_")) - {"new", "id", "ids"}
        best: dict[str, tuple[float, Span]] = {}
        for span in spans:
            score = _score(span, words) + _shape(parameter, span.value)
            if span.identity not in best or score > best[span.identity][0]:
                best[span.identity] = (score, span)
        return [span for _, span in sorted(best.values(), key=lambda item: -item[0])]

    def _answers(self) -> list[tuple[ToolCall, list[Span | None]]]:
        history = self._history
        latest = history.observations[-1][:400] if history.turn else ""
        answers = []
        if latest:
            answers.append((latest, Span(latest, "tool", history.turn)))
        if history.turn >= 2:
            both = (history.observations[-2][:200] + " " + latest[:200]).strip()
            answers.append((both, Span(both, "tool", history.turn - 1)))
        answers.append(("Done.", None))
        return [(ToolCall(name=FINAL_ANSWER, arguments={"answer": text}), [span]) for text, span in answers]

    def _questions(self) -> list[tuple[ToolCall, list[Span | None]]]:
        """One question per argument of a state-changing tool: 'What <argument> should I use?'."""
        questions: dict[str, None] = {}
        for schema in self._info.get("tools", []):
            function = schema["function"]
            if function["name"] in (FINAL_ANSWER, ASK_USER):
                continue
            for parameter, spec in function.get("parameters", {}).get("properties", {}).items():
                words = [w for w in parameter.split("_") if w not in ("id", "ids")]
                if words and spec.get("type", "string") == "string":
                    questions[f"What {' '.join(words)} should I use?"] = None
        return [(ToolCall(name=ASK_USER, arguments={"message": text}), [None]) for text in questions]

    def _features(self, call: ToolCall, spans: list[Span | None]) -> np.ndarray:
        history = self._history
        features = np.zeros(CANDIDATE_FEATURES, np.float32)
        features[self._tool_index(call.name)] = 1.0
        for slot, ((parameter, value), span) in enumerate(zip(call.arguments.items(), spans)):
            if slot >= ARG_SLOTS:
                break
            base = MAX_TOOLS + slot * ARG_FEATURES
            features[base] = 1.0
            if span is not None:
                features[base + 1] = float(span.source == "goal")
                features[base + 2] = float(span.source in ("tool", "user") and span.turn == history.turn)
                features[base + 3] = float(span.source in ("tool", "user") and span.turn < history.turn)
                features[base + 4] = float(span.source == "user")
                features[base + 5] = float(span.source == "enum")
                features[base + 6] = float(bool(span.key) and _key_matches(span.key, parameter))
                features[base + 8] = float(span.last)
            words = _words(str(value))
            features[base + 7] = len(words & history.user_words) / max(1, len(words))
            features[base + 9] = float(bool(re.search(r"[\d/#@_]", str(value))))
        tail = MAX_TOOLS + ARG_SLOTS * ARG_FEATURES
        text = call.to_text()
        features[tail] = float(text in history.calls)
        features[tail + 1] = min(1.0, history.tool_counts.get(call.name, 0) / 3)
        features[tail + 2] = float(history.last_error and bool(history.calls) and history.calls[-1] == text)
        features[tail + 3] = float(call.name == FINAL_ANSWER and history.last_role == "tool" and not history.last_error)
        return features

    # -- shaping ------------------------------------------------------------------------------------

    def _progress(self) -> float:
        """Φ: half the required facts seen so far, half the goal state's changes made (wrong changes count against)."""
        env = self.env.unwrapped
        task = getattr(env, "task", None)
        if task is None:
            return 0.0
        seen = " ".join(" ".join(self._history.observations[1:]).casefold().split())
        facts = task.required_outputs
        fact_share = sum(" ".join(f.casefold().split()) in seen for f in facts) / len(facts) if facts else 0.0
        gold = getattr(env.scenario, "_gold_states", {}).get(task.id)
        state_share = 0.0
        if gold is not None:
            start, now, target = _leaves(self._start_state), _leaves(_checked_state(env)), _leaves(gold)
            changes = {path for path in start.keys() | target.keys() if start.get(path) != target.get(path)}
            made = sum(now.get(path) == target.get(path) for path in changes)
            wrong = sum(now.get(path) != start.get(path) for path in now.keys() | start.keys() if path not in changes)
            state_share = max(-1.0, (made - wrong) / max(1, len(changes)))
        return 0.5 * fact_share + 0.5 * state_share


# ---- helpers --------------------------------------------------------------------------------------


def _checked_state(env: Any) -> Any:
    """The state the task's success check reads: a tool-use env's state, a web env's site state."""
    site = getattr(env, "site", None)
    return site.state if site is not None else env.state


def _admissible(env: Any, call: ToolCall) -> bool:
    """Whether the tool accepts the call: bound and dry-run on a copy of the episode state."""
    tool = env._actions.get(call.name)
    if tool is None:
        return False
    try:
        arguments = tool.bind(call)
        if call.name in (FINAL_ANSWER, ASK_USER):
            return True
        if tool.takes_state:  # on a throwaway copy: no need for call_tool's restore-on-error snapshot
            tool.function(copy_state(env.state), **arguments)
        else:
            tool.function(**arguments)
    except Exception:  # noqa: BLE001 -- a refused call (ToolError, ActionError, anything) is not admissible
        return False
    return True


def _spans(text: str, source: str, turn: int, whole: bool = True) -> list[Span]:
    """The values in an observation: JSON leaves (with their keys), else emails, paths, ids, names, ..."""
    spans: list[Span] = []
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        data = None
    if isinstance(data, (dict, list)):
        _json_spans(data, "", source, turn, spans)
        return spans
    found: list[str] = []
    phrases: set[str] = set()
    for pattern in (_EMAIL, _PATH, _FILENAME, _NAME, _ID, _NUMBER):
        found += [match.rstrip(".") for match in pattern.findall(text)]
    found += [a or b for a, b in _QUOTED.findall(text)]
    if source == "goal":  # capitalized words inside sentences: places, products, names
        found += re.findall(r"(?<=[a-z,] )[A-Z][a-z]+", text)
    if source == "user":
        for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
            match = _TAIL.search(sentence)
            if match:
                phrases.add(match.group(1).rstrip(".!? "))
        found += sorted(phrases)
    if source == "goal":
        words = re.findall(r"[a-z][a-z_]*", text.lower())
        found += [word for word in words if len(word) > 3 and word not in _STOPWORDS]
        found += [f"{a}_{b}" for a, b in zip(words, words[1:]) if a not in _STOPWORDS and b not in _STOPWORDS
                  and len(a) > 2 and len(b) > 2]
    if whole and 0 < len(text.strip()) <= 60 and source != "goal":
        found.append(text.strip().rstrip("."))
    seen: set[str] = set()
    for value in found:
        if value and value not in seen:
            seen.add(value)
            spans.append(Span(value, source, turn, phrase=value in phrases))
    return spans


def _json_spans(data: Any, key: str, source: str, turn: int, spans: list[Span]) -> None:
    if isinstance(data, dict):
        for child_key, value in data.items():
            _json_spans(value, str(child_key), source, turn, spans)
    elif isinstance(data, list):
        for position, value in enumerate(data):
            if isinstance(value, (dict, list)):
                _json_spans(value, key, source, turn, spans)
            else:
                spans.append(Span(value, source, turn, key, last=position == len(data) - 1))
    elif isinstance(data, (str, int, float)) and not isinstance(data, bool):
        spans.append(Span(data, source, turn, key))


def _score(span: Span, parameter_words: set[str]) -> float:
    recency = 1.0 / (1 + max(0, span.turn))  # older observations rank lower
    key_words = {word.rstrip("s") for word in re.split(r"[_\W]+", span.key.lower())} if span.key else set()
    key_match = float(bool({word.rstrip("s") for word in parameter_words} & key_words))
    source = {"tool": 2.0, "user": 2.5, "goal": 1.0, "instructions": 0.5, "enum": 1.0}.get(span.source, 0.0)
    return 3 * key_match + source + span.phrase + span.turn * 0.1 + recency * 0.01


def _shape(parameter: str, value: Any) -> float:
    """How well a value's shape fits an argument's name (paths for *path/*dir, ids for *_id, ...)."""
    text, words = str(value), set(parameter.lower().split("_"))
    if words & {"path", "dir", "directory", "folder"}:
        return 1.0 if text.startswith("/") else -1.0
    if words & {"email"}:
        return 1.0 if "@" in text else -1.0
    if words & {"id", "ids"}:
        return 0.5 if re.search(r"\d", text) and " " not in text else -1.0
    if words & {"date"}:
        return 1.0 if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else -1.0
    if words & {"name"}:
        return 0.5 if "/" not in text else -1.0
    if words & {"address", "message", "answer", "query", "reason"}:
        return 0.5 if " " in text else 0.0
    return 0.0


def _key_matches(key: str, parameter: str) -> bool:
    parameter_words = set(parameter.lower().split("_")) - {"new", "id", "ids"}
    key_words = {word.rstrip("s") for word in re.split(r"[_\W]+", key.lower())}
    return bool({word.rstrip("s") for word in parameter_words} & key_words)


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.casefold()) if word not in _STOPWORDS}


def _as_number(value: Any, kind: str) -> int | float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if kind == "integer":
        return int(number) if number.is_integer() else None
    return number


def _tool_name(text: str) -> str:
    try:
        return parse_action(text).name
    except ActionError:
        return ""


def _leaves(state: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(state, dict):
        leaves: dict[str, Any] = {}
        for key, value in state.items():
            leaves.update(_leaves(value, f"{prefix}/{key}"))
        return leaves or {prefix: {}}
    if isinstance(state, list) and any(isinstance(item, (dict, list)) for item in state):
        leaves = {}
        for index, value in enumerate(state):
            leaves.update(_leaves(value, f"{prefix}[{index}]"))
        return leaves
    return {prefix: state}


def make_admissible_env(scenario: Any = "retail", split: str = "train", max_candidates: int = 32,
                        shaping: float = 0.0, **env_kwargs: Any) -> AdmissibleActionEnv:
    """The admissible-action env of a scenario (RLlib's env_config maps onto these arguments)."""
    from trajalign.envs import make_env

    return AdmissibleActionEnv(make_env(scenario, split, **env_kwargs), max_candidates=max_candidates,
                               shaping=shaping)


__all__ = ["CANDIDATE_FEATURES", "CONTEXT_FEATURES", "SLOT_WIDTH", "AdmissibleActionEnv", "Candidate",
           "make_admissible_env"]
