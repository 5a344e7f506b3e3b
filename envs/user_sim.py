"""User simulators answer the agent's `ask_user` messages.

The scripted simulator is deterministic: it reveals each hidden detail of the task whose keywords
the message mentions. Any object with the same `reply` method (an LLM-backed simulator, a human
in the loop) can be passed to an environment instead.
"""

from __future__ import annotations

import re
from typing import Protocol

from trajalign.envs.scenario import Task


class UserSimulator(Protocol):
    def reply(self, task: Task, message: str) -> str:
        """The user's answer to `message`, given the task the user wants done."""
        ...


class ScriptedUser:
    def __init__(self, fallback_reply: str = "I have nothing to add to my request."):
        self.fallback_reply = fallback_reply

    def reply(self, task: Task, message: str) -> str:
        words = set(re.findall(r"\w+", message.casefold()))
        replies = [detail.reply for detail in task.hidden if any(_mentions(words, k) for k in detail.keywords)]
        return " ".join(replies) if replies else self.fallback_reply


def _mentions(words: set[str], keyword: str) -> bool:
    keyword_words = re.findall(r"\w+", keyword.casefold())
    return bool(keyword_words) and all(word in words for word in keyword_words)
