"""Seeded account-portal tasks: log in, then change one thing through a validated form.

Kinds: change the email or the phone number, change notification/language/time-zone settings,
change the password, add or remove a saved address, and file a replacement-card request or a
support ticket through the three-step form (whose reference number the answer must contain).
Success is the oracle's end state exactly: changing anything else, or submitting twice, fails.
Groups are (kind, the main value asked for), so test tasks ask for values train never does.
"""

import random

from trajalign.envs.scenario import import_sibling

FIRST = ["ana", "ben", "chen", "dara", "eli", "fay", "gus", "hana", "ivan", "jin", "kai", "lena", "mo", "nora",
         "omar", "pia", "raj", "sara", "tom", "uma", "vic", "wen", "yara", "zoe"]
LAST = ["lee", "kim", "garcia", "smith", "novak", "ito", "silva", "khan", "brown", "rossi", "muller", "dubois"]
DOMAINS = ["mailbox.test", "post.example", "inbox.example", "fastmail.example", "letters.test", "webmail.example"]
STREETS = ["Oak Street", "Maple Avenue", "Pine Road", "Cedar Lane", "Harbour Road", "Birch Way", "Lake Drive",
           "Mill Lane", "Station Road", "Church Street"]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Milford", "Ashland", "Clayton"]
LABELS = ["Home", "Work", "Parents", "Holiday flat", "Studio", "Old flat", "Warehouse", "Gym"]
WORDS = ["Amber", "Birch", "Comet", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Indigo", "Juniper"]
KINDS = ["email", "phone", "settings", "password", "add_address", "remove_address", "card", "ticket"]
SUBJECTS = {"Billing": ["Charged twice in March", "Refund for annual plan", "Invoice shows the wrong name"],
            "Login problems": ["Two-factor codes do not arrive", "Locked out after reset", "Cannot log in on mobile"],
            "Privacy": ["Delete my old data", "Download a copy of my data", "Who can see my profile"],
            "Other": ["Feedback on the new portal", "Update company details", "Question about branches"]}


def generate_tasks(count: int, seed: int) -> list[dict]:
    site = import_sibling(__file__, "site.py")  # fresh: an edited site is picked up
    rng = random.Random(seed)
    return [_task(site, rng, index) for index in range(count)]


def _address(rng, label):
    return {"label": label, "street": f"{rng.randint(1, 199)} {rng.choice(STREETS)}", "city": rng.choice(CITIES),
            "postcode": f"{rng.randint(10000, 99999)}"}


def _task(site, rng, index):
    kind = KINDS[index % len(KINDS)]
    first, last = rng.choice(FIRST), rng.choice(LAST)
    username = f"{first}{last}{rng.randint(10, 99)}"
    password = f"{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"
    labels = rng.sample(LABELS, rng.randint(1, 3))
    settings = {"language": rng.choice(site.LANGUAGES[:4]), "timezone": rng.choice(site.TIMEZONES),
                "notifications": {key: rng.random() < 0.5 for key in site.NOTIFICATIONS}}
    initial = {"username": username, "password": password, "reference_seed": rng.randint(1, 10**6),
               "profile": {"full_name": f"{first.title()} {last.title()}",
                           "email": f"{first}.{last}@{rng.choice(DOMAINS)}",
                           "phone": f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"},
               "settings": settings, "addresses": [_address(rng, label) for label in labels]}
    login = [{"name": "type", "arguments": {"id": "username", "text": username}},
             {"name": "type", "arguments": {"id": "password", "text": password}},
             {"name": "click", "arguments": {"id": "login-button"}}]
    hello = f"Log in to the Northwind accounts portal as {username} (password: {password})"
    required = []
    if kind == "email":
        domain = rng.choice(DOMAINS)
        email = f"{first}.{last}{rng.randint(1, 99)}@{domain}"
        goal = f"{hello} and change my email address to {email}."
        steps = [{"name": "click", "arguments": {"id": "nav-profile"}},
                 {"name": "type", "arguments": {"id": "email", "text": email}},
                 {"name": "click", "arguments": {"id": "save-profile"}}]
        group = f"email/{domain}"
    elif kind == "phone":
        area, middle, end = rng.randint(200, 999), rng.randint(100, 999), rng.randint(1000, 9999)
        goal = f"{hello} and update my phone number to ({area}) {middle} {end}."
        steps = [{"name": "click", "arguments": {"id": "nav-profile"}},
                 {"name": "type", "arguments": {"id": "phone", "text": f"{area}-{middle}-{end}"}},
                 {"name": "click", "arguments": {"id": "save-profile"}}]
        group = f"phone/{area // 100}"
    elif kind == "settings":
        flips = rng.sample(sorted(site.NOTIFICATIONS), 2)
        language = rng.choice([lang for lang in site.LANGUAGES if lang != settings["language"]])
        wishes, steps = [], [{"name": "click", "arguments": {"id": "nav-settings"}}]
        for key in flips:
            on = not settings["notifications"][key]
            wishes.append(f"turn {'on' if on else 'off'} {site.NOTIFICATIONS[key].lower()}")
            steps.append({"name": "click", "arguments": {"id": key}})
        steps += [{"name": "select", "arguments": {"id": "language", "option": language}},
                  {"name": "click", "arguments": {"id": "save-settings"}}]
        goal = f"{hello}, then {wishes[0]}, {wishes[1]}, and switch the portal language to {language}."
        group = f"settings/{language}/{'+'.join(flips)}"
    elif kind == "password":
        new = f"{rng.choice(WORDS)}{rng.choice(WORDS).lower()}{rng.randint(10, 99)}!"
        goal = f"{hello} and change my password to {new}"
        steps = [{"name": "click", "arguments": {"id": "nav-security"}},
                 {"name": "type", "arguments": {"id": "current-password", "text": password}},
                 {"name": "type", "arguments": {"id": "new-password", "text": new}},
                 {"name": "type", "arguments": {"id": "confirm-password", "text": new}},
                 {"name": "click", "arguments": {"id": "change-password"}}]
        group = f"password/{new[:3]}"
    elif kind == "add_address":
        label = rng.choice([lab for lab in LABELS if lab not in labels])
        address = _address(rng, label)
        goal = (f"{hello} and save a new address labelled '{label}': {address['street']}, {address['city']}, "
                f"postcode {address['postcode']}.")
        steps = [{"name": "click", "arguments": {"id": "nav-addresses"}}]
        steps += [{"name": "type", "arguments": {"id": f"address-{key}", "text": address[key]}} for key in address]
        steps.append({"name": "click", "arguments": {"id": "add-address"}})
        group = f"add_address/{label}/{address['city']}"
    elif kind == "remove_address":
        label = rng.choice(labels)
        goal = f"{hello} and delete the saved address labelled '{label}'."
        steps = [{"name": "click", "arguments": {"id": "nav-addresses"}},
                 {"name": "click", "arguments": {"id": f"remove-{site._slug(label)}"}}]
        group = f"remove_address/{label}"
    elif kind == "card":
        digits, delivery = f"{rng.randint(0, 9999):04d}", rng.choice(site.DELIVERY)
        goal = (f"{hello}, request a replacement for my card ending in {digits} with delivery by "
                f"{delivery.lower()}, and tell me the reference number.")
        steps = [{"name": "click", "arguments": {"id": "nav-requests"}},
                 {"name": "click", "arguments": {"id": "kind-card"}},
                 {"name": "click", "arguments": {"id": "next-step"}},
                 {"name": "type", "arguments": {"id": "card-digits", "text": digits}},
                 {"name": "select", "arguments": {"id": "delivery", "option": delivery}},
                 {"name": "click", "arguments": {"id": "next-step"}},
                 {"name": "click", "arguments": {"id": "confirm"}},
                 {"name": "click", "arguments": {"id": "submit-request"}}]
        required = [site.reference_number(initial["reference_seed"], 1)]
        group = f"card/{delivery}/{digits[0]}"
    else:
        topic = rng.choice(sorted(SUBJECTS))
        subject = rng.choice(SUBJECTS[topic])
        message = f"Hello, {subject.lower()}. My username is {username}. Thank you, {first.title()}."
        goal = (f"{hello} and open a support ticket on the topic {topic} with the subject \"{subject}\" and the "
                f"message \"{message}\". Tell me the ticket's reference number.")
        steps = [{"name": "click", "arguments": {"id": "nav-requests"}},
                 {"name": "click", "arguments": {"id": "kind-ticket"}},
                 {"name": "click", "arguments": {"id": "next-step"}},
                 {"name": "select", "arguments": {"id": "topic", "option": topic}},
                 {"name": "type", "arguments": {"id": "subject", "text": subject}},
                 {"name": "type", "arguments": {"id": "message", "text": message}},
                 {"name": "click", "arguments": {"id": "next-step"}},
                 {"name": "click", "arguments": {"id": "confirm"}},
                 {"name": "click", "arguments": {"id": "submit-request"}}]
        required = [site.reference_number(initial["reference_seed"], 1)]
        group = f"ticket/{topic}/{subject}"
    answer = f"Done. The reference number is {required[0]}." if required else "Done."
    return {"id": f"accounts-{index:04d}", "goal": goal, "group": group, "initial_state": initial,
            "required_outputs": required, "oracle": login + steps + [{"name": "answer", "arguments": {"text": answer}}]}
