"""Seeded task generator for the filesystem scenario.

Every task gets its own small home directory (16-26 files): notes, versioned drafts, settings
files, an archive, project plans, receipts and a todo list for a few topics. The user names a
topic, a person or a status; the agent must find the file through the tools, because paths,
versions and current values appear only in tool outputs. Distractors share names, people and
statuses with the target. Groups are (task kind, topic), so the test split asks about topics in
ways the train split never does.
"""

import random

HOME = "/home/user"
TOPICS = [
    "garden", "wedding", "taxes", "marathon", "book_club", "kitchen", "camping", "podcast", "recipes",
    "moving", "newsletter", "fundraiser", "website", "thesis", "bike_trip", "reunion", "car_repair",
    "bakery", "choir", "hackathon", "photo_album", "yoga_class", "chess_club", "birthday", "volunteering",
    "language_course",
]
# Fresh topics for copies of SFT data (`name_swaps` in scenario.yaml): the train split holds only a few
# two-word topics per task kind, which a small model memorizes instead of learning to copy.
_FRESH_WORDS = ["pottery", "surfing", "astronomy", "robotics", "knitting", "sailing", "painting", "jazz", "poetry",
                "archery", "fishing", "climbing", "rowing", "tennis", "origami", "beekeeping", "cycling", "skiing",
                "drawing", "juggling", "karate", "baking", "brewing", "dancing", "hiking", "fencing", "golf",
                "opera", "quilting", "scouting", "chemistry", "biology", "history", "museum", "orchestra",
                "carpentry", "welding", "pilates", "salsa", "sculpture"]
_FRESH_FIRST = ["kite", "film", "drone", "art", "math", "board", "game", "music", "trail", "river", "city", "school",
                "garage", "winter", "summer", "team", "family", "lake", "spring", "night"]
_FRESH_SECOND = ["festival", "race", "fair", "league", "camp", "show", "party", "trip", "tour", "retreat", "workshop",
                 "picnic", "sale", "cleanup", "meetup", "contest", "project", "course", "club", "dinner"]
NAME_SWAPS = {"names": TOPICS,
              "replacements": _FRESH_WORDS + [f"{a}_{b}" for a in _FRESH_FIRST for b in _FRESH_SECOND]}
FIRST = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana", "ivan", "jin", "kai", "lena", "mo", "nora",
         "omar", "pia", "raj", "sara", "tom", "uma", "vic", "wen", "yara", "zoe"]
LAST = ["lee", "kim", "garcia", "smith", "novak", "ito", "silva", "khan", "brown", "rossi", "muller", "dubois"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
SHOPS = ["Corner Market", "Hardware Hub", "Book Nook", "Green Grocer", "Tech Depot", "Paper Store"]
CHORES = ["buy stamps", "pay rent", "water plants", "renew library card", "book dentist", "fix bike light"]
SETTINGS = {
    "timeout": [10, 15, 20, 30, 45, 60, 90, 120],
    "retries": [1, 2, 3, 4, 5, 6, 8],
    "interval": [5, 10, 15, 30, 60],
    "port": [5000, 8000, 8080, 8888, 9000],
    "cache_size": [64, 128, 256, 512, 1024],
}
STATUSES = ["obsolete", "in review", "final"]
KINDS = ["move", "rename", "config", "delete", "question"]
FIELDS = ["contact", "budget", "meeting"]


def generate_tasks(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [_task(rng, index) for index in range(count)]


def _task(rng: random.Random, index: int) -> dict:
    kind = KINDS[index % len(KINDS)]
    topics = rng.sample(TOPICS, 4)
    topic = topics[0]
    title = topic.replace("_", " ")  # as the user writes it
    world = _World(rng, kind, topics)
    files = world.files
    task = {"id": f"filesystem-{index:04d}", "group": f"{kind}:{topic}", "hidden": [],
            "initial_state": {"dirs": sorted(world.dirs), "files": files}}

    if kind == "move":
        note = f"{HOME}/notes/{topic}.txt"
        person = world.contacts[topic]
        if rng.random() < 0.4:
            dest = f"{HOME}/projects/{topic}"
            reply = f"Put it in a new folder {dest}."
            steps = [_call("make_dir", path=dest)]
        else:
            dest = f"{HOME}/{rng.choice(['archive', 'documents'])}"
            reply = f"Put it in {dest}."
            steps = []
        task["goal"] = f"Please move the notes file that lists {person} as the contact to another folder."
        task["hidden"].append({"keywords": ["where", "folder", "destination"], "reply": reply})
        task["required_outputs"] = [f"{topic}.txt"]
        task["oracle"] = [_call("search_text", query=person),
                          _call("ask_user", message="Which folder should I move it to?"),
                          *steps,
                          _call("move_file", path=note, destination_dir=dest),
                          _call("final_answer", answer=f"I moved {topic}.txt to {dest}.")]

    elif kind == "rename":
        newest = f"{HOME}/drafts/{topic}_draft_v{world.versions[topic]}.txt"
        new_name = f"{topic}_{rng.choice(['final', 'submitted', 'shared', '2024'])}.txt"
        oracle = [_call("find_files", name_contains=f"{topic}_draft")]
        if rng.random() < 0.5:
            task["goal"] = f"Rename the newest version of my {title} draft to {new_name}."
        else:
            task["goal"] = f"Please rename the newest version of my {title} draft."
            task["hidden"].append({"keywords": ["name", "call"], "reply": f"Call it {new_name}."})
            oracle.append(_call("ask_user", message="What should the new name be?"))
        task["required_outputs"] = [new_name]
        task["oracle"] = oracle + [_call("rename_file", path=newest, new_name=new_name),
                                   _call("final_answer", answer=f"I renamed {newest} to {new_name}.")]

    elif kind == "config":
        path = f"{HOME}/config/{topic}.cfg"
        setting = rng.choice(world.settings[topic])
        old = world.values[topic][setting]
        new = rng.choice([v for v in SETTINGS[setting] if v != old])
        oracle = [_call("find_files", name_contains=topic), _call("read_file", path=path)]
        if rng.random() < 0.5:
            task["goal"] = f"In my {title} settings file, set {setting} to {new}."
        else:
            task["goal"] = f"Please change {setting} in my {title} settings file."
            task["hidden"].append({"keywords": ["value", "what", "set"], "reply": f"Set it to {new}."})
            oracle.append(_call("ask_user", message=f"What value should {setting} have?"))
        task["required_outputs"] = [str(new)]
        task["oracle"] = oracle + [
            _call("replace_in_file", path=path, old=f"{setting} = {old}", new=f"{setting} = {new}"),
            _call("final_answer", answer=f"In {path}, {setting} was {old}; it is now {setting} = {new}.")]

    elif kind == "delete":
        path = f"{HOME}/drafts/{topic}_draft_v{world.obsolete[topic]}.txt"
        task["goal"] = f"Delete my {title} draft that is marked obsolete. Keep the other versions."
        task["required_outputs"] = [f"{topic}_draft_v{world.obsolete[topic]}.txt"]
        task["oracle"] = [_call("search_text", query="obsolete"),
                          _call("delete_file", path=path),
                          _call("final_answer", answer=f"I deleted {path}.")]

    else:
        field = rng.choice(FIELDS)
        value = world.notes[topic][field]
        question = {"contact": f"Who is the contact in my {title} notes?",
                    "budget": f"What budget did I write in my {title} notes?",
                    "meeting": f"On which day is the meeting in my {title} notes?"}[field]
        task["goal"] = f"{question} I mean the current notes, not the archived copy."
        task["required_outputs"] = [value]
        task["oracle"] = [_call("find_files", name_contains=topic),
                          _call("read_file", path=f"{HOME}/notes/{topic}.txt"),
                          _call("final_answer", answer=f"The {field} in your {title} notes is {value}.")]
    return task


class _World:
    """One task's home directory; records the facts the task is built on."""

    def __init__(self, rng: random.Random, kind: str, topics: list[str]):
        target, others = topics[0], topics[1:]
        self.dirs = {HOME, *(f"{HOME}/{d}" for d in ["notes", "drafts", "config", "archive", "documents",
                                                    "downloads", "projects"])}
        self.files: dict[str, str] = {}
        people = [f"{f.title()} {l.title()}" for f, l in rng.sample([(f, l) for f in FIRST for l in LAST], 14)]
        budgets = rng.sample(range(100, 1000, 10), 6)
        self.notes, self.contacts = {}, {}
        for topic in topics:  # current notes: every topic has one
            facts = {"contact": people.pop(), "budget": str(budgets.pop()), "meeting": rng.choice(DAYS)}
            self.notes[topic], self.contacts[topic] = facts, facts["contact"]
            self.files[f"{HOME}/notes/{topic}.txt"] = _notes(topic, facts)
        old = self.notes[target]  # archived notes of the target topic, every fact different
        archived = {"contact": people.pop(), "budget": str(budgets.pop()),
                    "meeting": rng.choice([d for d in DAYS if d != old["meeting"]])}
        self.files[f"{HOME}/archive/{target}_2022.txt"] = _notes(target, archived, " 2022 (archived)")
        other = rng.choice(others)
        self.files[f"{HOME}/archive/{other}_2022.txt"] = _notes(
            other, {"contact": people.pop(), "budget": str(budgets.pop()), "meeting": rng.choice(DAYS)},
            " 2022 (archived)")

        # Drafts: versions 1..n per topic; the target has exactly one obsolete version.
        self.versions, self.obsolete = {}, {}
        for topic in topics:
            n = rng.randint(2, 4) if topic == target else rng.randint(1, 3)
            self.versions[topic] = n
            if topic == target:
                bad = rng.randint(1, n)
                self.obsolete[topic] = bad
                statuses = ["obsolete" if v == bad else rng.choice(STATUSES[1:]) for v in range(1, n + 1)]
            else:
                statuses = [rng.choice(STATUSES) for _ in range(n)]
            for version, status in enumerate(statuses, start=1):
                reviewer = rng.choice(people)  # never a current contact
                self.files[f"{HOME}/drafts/{topic}_draft_v{version}.txt"] = (
                    f"{_title(topic)} draft v{version}\nstatus: {status}\nreviewer: {reviewer}")
        if kind == "delete":  # another topic's obsolete draft as a distractor
            topic = rng.choice(others)
            version = rng.randint(1, self.versions[topic])
            path = f"{HOME}/drafts/{topic}_draft_v{version}.txt"
            lines = self.files[path].split("\n")
            self.files[path] = "\n".join([lines[0], "status: obsolete", lines[2]])
        if kind == "move":  # the target's contact also reviews another topic's draft
            topic = rng.choice(others)
            path = f"{HOME}/drafts/{topic}_draft_v{rng.randint(1, self.versions[topic])}.txt"
            lines = self.files[path].split("\n")
            self.files[path] = "\n".join([lines[0], lines[1], f"reviewer: {self.contacts[target]}"])

        # Settings files for the target and two other topics, sharing setting names.
        self.settings, self.values = {}, {}
        for topic in [target, *others[:2]]:
            names = rng.sample(list(SETTINGS), 3)
            values = {name: rng.choice(SETTINGS[name]) for name in names}
            self.settings[topic], self.values[topic] = names, values
            body = "\n".join(f"{name} = {value}" for name, value in values.items())
            self.files[f"{HOME}/config/{topic}.cfg"] = f"# {_title(topic)} settings\n{body}"

        # Project plans for other topics only (the target's project folder must not exist).
        for topic in rng.sample(others, rng.randint(1, 2)):
            self.dirs.add(f"{HOME}/projects/{topic}")
            self.files[f"{HOME}/projects/{topic}/plan.txt"] = (
                f"{_title(topic)} plan\ndeadline: {rng.choice(MONTHS)} {rng.randint(1, 28)}")
        number = rng.randint(1000, 9999)
        self.files[f"{HOME}/downloads/receipt_{number}.txt"] = (
            f"Receipt {number}\nshop: {rng.choice(SHOPS)}\ntotal: {rng.randint(5, 300)} dollars")
        call = self.contacts[target] if kind == "move" and rng.random() < 0.5 else rng.choice(people)
        self.files[f"{HOME}/documents/todo.txt"] = f"Todo\n- call {call}\n- {rng.choice(CHORES)}"


def _notes(topic: str, facts: dict, suffix: str = "") -> str:
    return (f"{_title(topic)} notes{suffix}\ncontact: {facts['contact']}\nbudget: {facts['budget']} dollars\n"
            f"meeting: {facts['meeting']}")


def _title(topic: str) -> str:
    return topic.replace("_", " ").capitalize()


def _call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}
