"""`WebEnv` (`trajalign/Web-v0`): a web scenario's site in real Chromium, one task per episode.

    env = gym.make("trajalign/Web-v0", scenario="shop", split="train")
    observation, info = env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step('type(search-input, "red hoodie\\n")')

The site is Python (envs/web_site.py), served on loopback through the browser's gateway; a fresh
site instance and a fresh browser context start every episode. The episode ends with `answer(text)`:
the scenario scores the site's final state and the answer (reward in [0, 1], status `success` only
at 1.0), or with the invalid-action limit, the turn limit, or an `env_error`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trajalign.envs.browser_env import BrowserEnv
from trajalign.envs.gateway import HttpRequest, HttpResponse
from trajalign.envs.scenario import Scenario, Task, load_scenario
from trajalign.envs.web_scenario import WebScenario
from trajalign.envs.web_site import SiteRequest, serve


class WebEnv(BrowserEnv):
    """Web navigation over a `kind: web` scenario's tasks.

    Args:
        scenario: a built-in web scenario name ("shop", "accounts", "wiki"), a scenario folder or YAML
            path, or a loaded `WebScenario`.
        split: which tasks `reset` draws from, "train" or "test".
        max_turns, max_invalid_actions: override the scenario's limits.
        action_timeout_s: how long a click/type/select may wait for its element before it fails.
        chromium: the Chromium binary (default: $TRAJALIGN_CHROMIUM or /usr/bin/chromium).
    """

    def __init__(
        self,
        scenario: str | Path | Scenario = "shop",
        split: str = "train",
        max_turns: int | None = None,
        max_invalid_actions: int | None = None,
        render_mode: str | None = None,
        **browser_options: Any,
    ):
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if not isinstance(self.scenario, WebScenario):
            raise ValueError(f"scenario '{self.scenario.name}' is a {self.scenario.kind} scenario, not web")
        self.split = split
        self.tasks = self.scenario.tasks_in(split)
        if not self.tasks:
            raise ValueError(f"scenario '{self.scenario.name}' has no tasks in split '{split}'")
        limits = self.scenario.limits
        longest_goal = max(len(task.goal) for task in self.tasks)
        super().__init__(
            host=self.scenario.host,
            max_turns=max_turns or limits.max_turns,
            max_invalid_actions=max_invalid_actions or limits.max_invalid_actions,
            max_action_chars=limits.max_action_chars,
            max_observation_chars=max(limits.max_observation_chars, longest_goal + 1000),
            render_mode=render_mode,
            **browser_options,
        )
        self.task: Task | None = None
        self.site: Any = None

    def _choose_task(self, options: dict[str, Any]) -> None:
        task_id = options.get("task_id")
        if task_id is None:
            self.task = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        else:
            self.task = self.scenario.task(task_id)
            if self.task.split != self.split:
                raise ValueError(f"task '{task_id}' is in split '{self.task.split}', this env serves '{self.split}'")
        self.site = self.scenario.make_site(self.task)

    def _task_id(self) -> str:
        return self.task.id

    def _goal(self) -> str:
        return self.task.goal

    def _reset_info(self) -> dict[str, Any]:
        return {"task_id": self.task.id, "scenario": self.scenario.name, "split": self.split,
                "instructions": self.scenario.instructions}

    async def _serve(self, request: HttpRequest) -> HttpResponse:
        site_request = SiteRequest.from_url(request.method, request.url, request.body,
                                            request.headers.get("content-type", ""))
        response = serve(self.site, site_request)
        headers = {"Location": response.location} if response.location else {}
        return HttpResponse(response.status, response.body, response.content_type, headers)

    async def _open(self, page: Any) -> None:
        await page.goto(self.scenario.origin + self.scenario.start_path)

    def _score_answer(self, text: str) -> tuple[float, str]:
        reward = self.scenario.score(self.task, self.site.state, text)
        return reward, "success" if reward >= 1.0 else "failure"
