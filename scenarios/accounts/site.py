"""The accounts portal: log in, then edit the profile, settings, password and address book, or file a
request through a three-step form. Every form validates its input server-side and shows what is wrong.

`state` is what the success check compares with the oracle's end state: profile, settings, password,
addresses and submitted requests (not the session).
"""

from __future__ import annotations

import re

from trajalign.envs.web_site import SiteRequest, SiteResponse, escape, not_found, redirect

LANGUAGES = ["English", "Deutsch", "Español", "Français", "Italiano", "Nederlands", "Polski", "Português"]
TIMEZONES = ["UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago", "America/Los_Angeles",
             "Asia/Tokyo", "Australia/Sydney"]
NOTIFICATIONS = {"newsletter": "Monthly newsletter", "sms-alerts": "SMS alerts", "security-alerts": "Security alerts",
                 "product-news": "Product news"}
REQUEST_TYPES = {"card": "Replacement card", "ticket": "Support ticket"}
DELIVERY = ["Standard post", "Express courier", "Collect at branch"]
TOPICS = ["Billing", "Login problems", "Privacy", "Other"]
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class AccountsSite:
    """One user's portal. `initial_state`: username, password, profile, settings, addresses, reference_seed."""

    def __init__(self, initial_state: dict):
        self.username = initial_state["username"]
        self.reference_seed = initial_state["reference_seed"]
        self.state = {"password": initial_state["password"], "profile": dict(initial_state["profile"]),
                      "settings": {**initial_state["settings"],
                                   "notifications": dict(initial_state["settings"]["notifications"])},
                      "addresses": [dict(a) for a in initial_state["addresses"]], "requests": []}
        self.logged_in = False
        self.draft: dict = {}
        self.flash = ""

    def handle(self, request: SiteRequest) -> SiteResponse | str:
        path = request.path.rstrip("/") or "/"
        if path in ("/", "/login"):
            return self._login(request)
        if not self.logged_in:
            return redirect("/login")
        pages = {"/dashboard": self._dashboard, "/profile": self._profile, "/settings": self._settings,
                 "/security": self._security, "/addresses": self._addresses, "/requests/new": self._new_request,
                 "/logout": self._logout}
        if path in pages:
            return pages[path](request)
        if path.startswith("/requests/"):
            return self._show_request(path.rsplit("/", 1)[1])
        return not_found()

    # -- layout ----------------------------------------------------------------------------

    def _layout(self, title: str, body: str, errors: list[str] | None = None) -> str:
        nav = ""
        if self.logged_in:
            nav = ("<nav aria-label='Main'><a id='nav-dashboard' href='/dashboard'>Dashboard</a> "
                   "<a id='nav-profile' href='/profile'>Profile</a> <a id='nav-settings' href='/settings'>Settings</a> "
                   "<a id='nav-security' href='/security'>Password</a> "
                   "<a id='nav-addresses' href='/addresses'>Address book</a> "
                   "<a id='nav-requests' href='/requests/new'>New request</a> <a id='logout' href='/logout'>Log out</a></nav>")
        notice = ""
        if errors:
            notice = "<div role='alert' class='errors'><p>Please fix the following:</p><ul>" + "".join(
                f"<li>{escape(e)}</li>" for e in errors) + "</ul></div>"
        elif self.flash:
            notice = f"<p role='status'>{escape(self.flash)}</p>"
        self.flash = ""
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)} | Northwind Accounts</title>"
                "<style>body{font-family:sans-serif;max-width:760px;margin:auto}label{display:block;margin-top:.5em}"
                ".errors{color:#a00}</style></head><body><header><p>Northwind Accounts</p>"
                f"{nav}</header><main><h1>{escape(title)}</h1>{notice}{body}</main></body></html>")

    # -- pages ------------------------------------------------------------------------------

    def _login(self, request: SiteRequest) -> SiteResponse | str:
        errors = []
        if request.method == "POST":
            if request.get("username").strip() == self.username and request.get("password") == self.state["password"]:
                self.logged_in = True
                return redirect("/dashboard")
            errors.append("The username or password is incorrect.")
        elif self.logged_in:
            return redirect("/dashboard")
        body = ("<form method='post' action='/login'><label for='username'>Username</label>"
                f"<input id='username' name='username' value='{escape(request.get('username'))}' autocomplete='off'>"
                "<label for='password'>Password</label><input id='password' name='password' type='password'>"
                "<p><button id='login-button'>Log in</button></p></form>")
        return self._layout("Log in", body, errors)

    def _logout(self, request: SiteRequest) -> SiteResponse:
        self.logged_in = False
        return redirect("/login")

    def _dashboard(self, request: SiteRequest) -> str:
        profile = self.state["profile"]
        body = (f"<p>Welcome back, {escape(profile['full_name'])}.</p><ul>"
                "<li><a id='card-profile' href='/profile'>Edit your name, email and phone</a></li>"
                "<li><a id='card-settings' href='/settings'>Notifications, language and time zone</a></li>"
                "<li><a id='card-security' href='/security'>Change your password</a></li>"
                "<li><a id='card-addresses' href='/addresses'>Manage saved addresses</a></li>"
                "<li><a id='card-requests' href='/requests/new'>Request a replacement card or contact support</a></li>"
                "</ul>")
        return self._layout("Dashboard", body)

    def _profile(self, request: SiteRequest) -> SiteResponse | str:
        profile = self.state["profile"]
        errors = []
        values = dict(profile)
        if request.method == "POST":
            values = {"full_name": request.get("full_name").strip(), "email": request.get("email").strip(),
                      "phone": request.get("phone").strip()}
            if len(values["full_name"]) < 2:
                errors.append("Full name is required.")
            if not EMAIL.match(values["email"]):
                errors.append("Email address must look like name@example.com.")
            digits = re.sub(r"[\s()-]", "", values["phone"])
            if not (digits.isdigit() and len(digits) == 10):
                errors.append("Phone number must have 10 digits (spaces and dashes are allowed).")
            if not errors:
                profile.update(values, phone=f"{digits[:3]}-{digits[3:6]}-{digits[6:]}")
                self.flash = "Your profile was saved."
                return redirect("/profile")
        body = ("<form method='post' action='/profile'>"
                f"<label for='full-name'>Full name</label><input id='full-name' name='full_name' value='{escape(values['full_name'])}'>"
                f"<label for='email'>Email address</label><input id='email' name='email' value='{escape(values['email'])}'>"
                f"<label for='phone'>Phone number</label><input id='phone' name='phone' value='{escape(values['phone'])}'>"
                "<p><button id='save-profile'>Save profile</button></p></form>")
        return self._layout("Profile", body, errors)

    def _settings(self, request: SiteRequest) -> SiteResponse | str:
        settings = self.state["settings"]
        if request.method == "POST":
            language, timezone = request.get("language"), request.get("timezone")
            errors = []
            if language not in LANGUAGES:
                errors.append("Choose a language from the list.")
            if timezone not in TIMEZONES:
                errors.append("Choose a time zone from the list.")
            if errors:
                return self._layout("Settings", self._settings_form(settings), errors)
            settings["language"], settings["timezone"] = language, timezone
            settings["notifications"] = {key: bool(request.get_all(key)) for key in NOTIFICATIONS}
            self.flash = "Your settings were saved."
            return redirect("/settings")
        return self._layout("Settings", self._settings_form(settings))

    def _settings_form(self, settings: dict) -> str:
        boxes = "".join(
            f"<label><input type='checkbox' id='{key}' name='{key}' value='on'"
            f"{' checked' if settings['notifications'][key] else ''}> {escape(label)}</label>"
            for key, label in NOTIFICATIONS.items())
        languages = "".join(f"<option{' selected' if value == settings['language'] else ''}>{escape(value)}</option>"
                            for value in LANGUAGES)
        zones = "".join(f"<option{' selected' if value == settings['timezone'] else ''}>{escape(value)}</option>"
                        for value in TIMEZONES)
        return ("<form method='post' action='/settings'><fieldset><legend>Notifications</legend>"
                f"{boxes}</fieldset><label for='language'>Language</label><select id='language' name='language'>"
                f"{languages}</select><label for='timezone'>Time zone</label><select id='timezone' name='timezone'>"
                f"{zones}</select><p><button id='save-settings'>Save settings</button></p></form>")

    def _security(self, request: SiteRequest) -> SiteResponse | str:
        errors = []
        if request.method == "POST":
            current, new, confirm = request.get("current"), request.get("new"), request.get("confirm")
            if current != self.state["password"]:
                errors.append("Current password is incorrect.")
            if len(new) < 10 or not re.search(r"[0-9]", new) or not re.search(r"[A-Za-z]", new):
                errors.append("New password must be at least 10 characters with a letter and a digit.")
            if new != confirm:
                errors.append("The new passwords do not match.")
            if new == current:
                errors.append("The new password must differ from the current one.")
            if not errors:
                self.state["password"] = new
                self.flash = "Your password was changed."
                return redirect("/security")
        body = ("<form method='post' action='/security'>"
                "<label for='current-password'>Current password</label><input id='current-password' name='current' type='password'>"
                "<label for='new-password'>New password</label><input id='new-password' name='new' type='password'>"
                "<label for='confirm-password'>Confirm new password</label><input id='confirm-password' name='confirm' type='password'>"
                "<p><button id='change-password'>Change password</button></p></form>")
        return self._layout("Change password", body, errors)

    def _addresses(self, request: SiteRequest) -> SiteResponse | str:
        addresses = self.state["addresses"]
        errors = []
        values = {"label": "", "street": "", "city": "", "postcode": ""}
        if request.method == "POST" and request.get("remove"):
            self.state["addresses"] = [a for a in addresses if a["label"] != request.get("remove")]
            self.flash = f"Removed the address '{request.get('remove')}'."
            return redirect("/addresses")
        if request.method == "POST":
            values = {key: request.get(key).strip() for key in values}
            if not values["label"]:
                errors.append("Give the address a label.")
            elif any(a["label"].casefold() == values["label"].casefold() for a in addresses):
                errors.append("You already have an address with that label.")
            if not values["street"]:
                errors.append("Street is required.")
            if not values["city"]:
                errors.append("City is required.")
            if not re.fullmatch(r"[0-9]{5}", values["postcode"]):
                errors.append("Postcode must be 5 digits.")
            if not errors:
                addresses.append(values)
                self.flash = f"Added the address '{values['label']}'."
                return redirect("/addresses")
        rows = "".join(
            f"<tr><td>{escape(a['label'])}</td><td>{escape(a['street'])}, {escape(a['city'])} {escape(a['postcode'])}</td>"
            f"<td><form method='post' action='/addresses'><input type='hidden' name='remove' value='{escape(a['label'])}'>"
            f"<button id='remove-{_slug(a['label'])}'>Remove</button></form></td></tr>" for a in addresses)
        table = (f"<table><thead><tr><th>Label</th><th>Address</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
                 if addresses else "<p>You have no saved addresses.</p>")
        form = ("<h2>Add an address</h2><form method='post' action='/addresses'>"
                + "".join(f"<label for='address-{key}'>{key.title()}</label>"
                          f"<input id='address-{key}' name='{key}' value='{escape(values[key])}'>" for key in values)
                + "<p><button id='add-address'>Add address</button></p></form>")
        return self._layout("Address book", table + form, errors)

    def _new_request(self, request: SiteRequest) -> SiteResponse | str:
        step = request.get("step", "1")
        draft = self.draft
        if request.method == "POST":
            errors = []
            if step == "1":
                kind = request.get("kind")
                if kind not in REQUEST_TYPES:
                    errors.append("Choose what you need.")
                else:
                    self.draft = {"kind": kind}
                    return redirect("/requests/new?step=2")
                return self._layout("New request", self._request_step1(), errors)
            if step == "2" and draft.get("kind") == "card":
                digits, delivery = request.get("card_digits").strip(), request.get("delivery")
                if not re.fullmatch(r"[0-9]{4}", digits):
                    errors.append("Enter the last 4 digits of the card.")
                if delivery not in DELIVERY:
                    errors.append("Choose a delivery method.")
                if not errors:
                    draft.update(card_digits=digits, delivery=delivery)
                    return redirect("/requests/new?step=3")
                return self._layout("New request: details", self._request_step2(draft, request), errors)
            if step == "2" and draft.get("kind") == "ticket":
                topic = request.get("topic")
                subject, message = request.get("subject").strip(), request.get("message").strip()
                if topic not in TOPICS:
                    errors.append("Choose a topic.")
                if len(subject) < 3:
                    errors.append("The subject needs at least 3 characters.")
                if len(message) < 10:
                    errors.append("The message needs at least 10 characters.")
                if not errors:
                    draft.update(topic=topic, subject=subject, message=message)
                    return redirect("/requests/new?step=3")
                return self._layout("New request: details", self._request_step2(draft, request), errors)
            if step == "3" and _complete(draft):
                if not request.get("confirm"):
                    return self._layout("New request: review", self._request_step3(draft),
                                        ["Tick the box to confirm the details are correct."])
                number = reference_number(self.reference_seed, len(self.state["requests"]) + 1)
                self.state["requests"].append({"number": number, **draft})
                self.draft = {}
                return redirect(f"/requests/{number}")
            return redirect("/requests/new")
        if step == "2" and draft.get("kind"):
            return self._layout("New request: details", self._request_step2(draft, request))
        if step == "3" and _complete(draft):
            return self._layout("New request: review", self._request_step3(draft))
        return self._layout("New request", self._request_step1())

    def _request_step1(self) -> str:
        options = "".join(f"<label><input type='radio' id='kind-{key}' name='kind' value='{key}'> {label}</label>"
                          for key, label in REQUEST_TYPES.items())
        return ("<p>Step 1 of 3: what do you need?</p><form method='post' action='/requests/new?step=1'>"
                f"<fieldset><legend>Request type</legend>{options}</fieldset>"
                "<p><button id='next-step'>Next</button></p></form>")

    def _request_step2(self, draft: dict, request: SiteRequest) -> str:
        if draft["kind"] == "card":
            options = "<option value=''>Choose...</option>" + "".join(
                f"<option{' selected' if d == request.get('delivery') else ''}>{escape(d)}</option>" for d in DELIVERY)
            fields = ("<label for='card-digits'>Last 4 digits of the card</label>"
                      f"<input id='card-digits' name='card_digits' value='{escape(request.get('card_digits'))}'>"
                      f"<label for='delivery'>Delivery</label><select id='delivery' name='delivery'>{options}</select>")
        else:
            options = "<option value=''>Choose...</option>" + "".join(
                f"<option{' selected' if t == request.get('topic') else ''}>{escape(t)}</option>" for t in TOPICS)
            fields = (f"<label for='topic'>Topic</label><select id='topic' name='topic'>{options}</select>"
                      f"<label for='subject'>Subject</label><input id='subject' name='subject' value='{escape(request.get('subject'))}'>"
                      f"<label for='message'>Message</label><textarea id='message' name='message'>{escape(request.get('message'))}</textarea>")
        return (f"<p>Step 2 of 3: {escape(REQUEST_TYPES[draft['kind']].lower())} details</p>"
                f"<form method='post' action='/requests/new?step=2'>{fields}"
                "<p><button id='next-step'>Next</button></p></form>"
                "<p><a id='start-over' href='/requests/new'>Start over</a></p>")

    def _request_step3(self, draft: dict) -> str:
        rows = "".join(f"<tr><th>{escape(key.replace('_', ' ').capitalize())}</th><td>{escape(value if key != 'kind' else REQUEST_TYPES[value])}</td></tr>"
                       for key, value in draft.items())
        return ("<p>Step 3 of 3: check and submit</p>"
                f"<table><tbody>{rows}</tbody></table><form method='post' action='/requests/new?step=3'>"
                "<label><input type='checkbox' id='confirm' name='confirm' value='yes'> The details above are correct</label>"
                "<p><button id='submit-request'>Submit request</button></p></form>"
                "<p><a id='back-to-details' href='/requests/new?step=2'>Change the details</a></p>")

    def _show_request(self, number: str) -> SiteResponse | str:
        found = next((r for r in self.state["requests"] if r["number"] == number), None)
        if found is None:
            return not_found(f"No request {number}.")
        return self._layout(f"Request {number}", f"<p>Your request was submitted. Reference number: "
                                                f"<strong>{escape(number)}</strong>.</p>"
                                                "<p><a id='back-to-dashboard' href='/dashboard'>Back to the dashboard</a></p>")


def reference_number(seed: int, index: int) -> str:
    """The reference of the index-th request (1-based) a user submits."""
    return f"R-{(seed * 7919 + 104729 * index) % 90000 + 10000}"


def _complete(draft: dict) -> bool:
    return ("card_digits" in draft) or ("message" in draft)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
