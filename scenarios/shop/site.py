"""The shop: search, paginated results, product pages with size and colour, cart and checkout.

The catalogue is generated from a seed (the same for every task); each episode gets its own
`ShopSite` with an empty (or pre-filled) cart. The reward follows WebShop: the fraction of the
requested attributes, options and price bound that the purchased item matches; 1.0 only when all do.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from urllib.parse import quote_plus

from trajalign.envs.web_site import SiteRequest, SiteResponse, escape, not_found, redirect

PAGE_SIZE = 8
COLOURS = ["black", "white", "navy", "grey", "red", "green", "blue", "beige", "olive", "pink", "brown", "yellow"]
CATEGORIES = {
    # category: (attributes, sizes, base price)
    "t-shirt": (["organic cotton", "slim fit", "v-neck", "moisture wicking", "machine washable", "relaxed fit",
                 "long sleeve", "crew neck"], ["XS", "S", "M", "L", "XL", "XXL"], 18),
    "hoodie": (["fleece lined", "zip up", "pullover", "water resistant", "oversized", "organic cotton",
                "kangaroo pocket"], ["S", "M", "L", "XL"], 42),
    "running shoes": (["lightweight", "breathable", "non-slip", "cushioned", "waterproof", "wide fit",
                       "recycled materials"], ["7", "8", "9", "10", "11", "12"], 75),
    "backpack": (["waterproof", "laptop sleeve", "lightweight", "anti-theft", "padded straps", "recycled materials",
                  "roll top"], ["20 L", "25 L", "30 L", "40 L"], 55),
    "jeans": (["stretch", "high waist", "slim fit", "straight leg", "bootcut", "organic cotton", "relaxed fit"],
              ["28", "30", "32", "34", "36"], 48),
    "rain jacket": (["packable", "hooded", "breathable", "seam sealed", "windproof", "reflective trim"],
                    ["S", "M", "L", "XL"], 80),
    "socks": (["merino wool", "cushioned", "ankle length", "crew length", "moisture wicking", "compression"],
              ["S", "M", "L"], 9),
    "yoga pants": (["high waist", "squat proof", "side pockets", "stretch", "quick dry", "flared"],
                   ["XS", "S", "M", "L", "XL"], 35),
    "sandals": (["adjustable straps", "arch support", "waterproof", "vegan leather", "cushioned", "non-slip"],
                ["6", "7", "8", "9", "10", "11"], 40),
    "winter coat": (["down filled", "hooded", "waterproof", "windproof", "long length", "recycled materials"],
                    ["S", "M", "L", "XL"], 150),
}
BRANDS = ["Northpeak", "Urbanline", "Trailhead", "Kestrel", "Bramble", "Lumen", "Ferro", "Ostara", "Halcyon",
          "Meridian", "Copperleaf", "Driftwood"]
PRODUCTS_PER_CATEGORY = 44


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    category: str
    attributes: tuple[str, ...]
    sizes: tuple[str, ...]
    colours: tuple[str, ...]
    price: float
    rating: float
    words: frozenset[str]  # what search matches: title, category and attributes


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@functools.lru_cache(maxsize=4)
def catalogue(seed: int) -> dict[str, Product]:
    rng = random.Random(seed)
    products: dict[str, Product] = {}
    number = 0
    for category, (attributes, sizes, base) in CATEGORIES.items():
        for _ in range(PRODUCTS_PER_CATEGORY):
            number += 1
            chosen = tuple(sorted(rng.sample(attributes, rng.randint(2, 4)), key=attributes.index))
            shown = [a for a in chosen if rng.random() < 0.5][:2]
            title = f"{rng.choice(BRANDS)} {' '.join(a.title() for a in shown)} {category.title()}".replace("  ", " ")
            size_count = rng.randint(2, len(sizes))
            start = rng.randint(0, len(sizes) - size_count)
            product_sizes = tuple(sizes[start:start + size_count])
            colours = tuple(sorted(rng.sample(COLOURS, rng.randint(2, 5)), key=COLOURS.index))
            price = round(base * rng.uniform(0.6, 1.8)) - 0.01
            words = frozenset(tokens(" ".join((title, category, *chosen))))
            products[f"P{number:04d}"] = Product(f"P{number:04d}", title, category, chosen, product_sizes, colours,
                                                 price, round(rng.uniform(3.0, 5.0), 1), words)
    return products


@functools.lru_cache(maxsize=4096)
def search(seed: int, query: str) -> tuple[str, ...]:
    """Product ids for a query, most relevant first: query words matched, then rating, then id."""
    words = set(tokens(query))
    if not words:
        return ()
    scored = []
    for product in catalogue(seed).values():
        score = len(words & product.words)
        if score:
            scored.append((-score, -product.rating, product.id))
    return tuple(product_id for _, _, product_id in sorted(scored))


def price(value: float) -> str:
    return f"${value:,.2f}"


class ShopSite:
    """One shopper's visit. `initial_state`: catalogue_seed, and optionally a pre-filled cart."""

    def __init__(self, initial_state: dict):
        self.seed = initial_state["catalogue_seed"]
        self.products = catalogue(self.seed)
        self.state = {"cart": [dict(line) for line in initial_state.get("cart", [])], "orders": []}
        self._next_line = 1 + max((int(line["line"][1:]) for line in self.state["cart"]), default=0)

    def handle(self, request: SiteRequest) -> SiteResponse | str:
        path = request.path.rstrip("/") or "/"
        if path == "/":
            return self._home()
        if path == "/search":
            return self._results(request.get("q"), request.get("page", "1"))
        if path.startswith("/product/"):
            return self._product(path.rsplit("/", 1)[1], request)
        if path == "/cart/add" and request.method == "POST":
            return self._add(request)
        if path == "/cart/remove" and request.method == "POST":
            self.state["cart"] = [line for line in self.state["cart"] if line["line"] != request.get("line")]
            return redirect("/cart")
        if path == "/cart":
            return self._cart()
        if path == "/checkout":
            return self._checkout(request)
        if path.startswith("/orders/"):
            return self._order(path.rsplit("/", 1)[1])
        return not_found()

    # -- pages --------------------------------------------------------------------------------

    def _layout(self, title: str, body: str, query: str = "") -> str:
        count = len(self.state["cart"])
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)} | Hilltop Outfitters</title>"
                "<style>body{font-family:sans-serif;max-width:900px;margin:auto}nav a{margin-right:1em}"
                ".error{color:#b00}</style></head><body>"
                "<header><nav><a id='home-link' href='/'>Hilltop Outfitters</a>"
                f"<a id='cart-link' href='/cart'>Cart ({count})</a></nav>"
                "<form role='search' action='/search'><input id='search-input' name='q' aria-label='Search products' "
                f"value='{escape(query)}'><button id='search-button'>Search</button></form></header>"
                f"<main>{body}</main></body></html>")

    def _home(self) -> str:
        categories = "".join(f"<li><a id='category-{_slug(c)}' href='/search?q={quote_plus(c)}'>{escape(c.title())}</a></li>"
                             for c in CATEGORIES)
        return self._layout("Home", f"<h1>Welcome</h1><p>Search our catalogue of {len(self.products)} products, or "
                                    f"browse a category.</p><h2>Categories</h2><ul>{categories}</ul>")

    def _results(self, query: str, page_text: str) -> str:
        ids = search(self.seed, query)
        pages = max(1, -(-len(ids) // PAGE_SIZE))
        page = min(max(_int(page_text, 1), 1), pages)
        shown = ids[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        items = "".join(
            f"<li><a id='product-{p}' href='/product/{p}?q={quote_plus(query)}&amp;page={page}'>"
            f"{escape(self.products[p].title)}</a> {price(self.products[p].price)}</li>" for p in shown)
        links = []
        if page > 1:
            links.append(f"<a id='prev-page' href='/search?q={quote_plus(query)}&amp;page={page - 1}'>Previous</a>")
        if page < pages:
            links.append(f"<a id='next-page' href='/search?q={quote_plus(query)}&amp;page={page + 1}'>Next</a>")
        heading = (f"<h1>Results for &quot;{escape(query)}&quot;</h1><p>{len(ids)} products, page {page} of {pages}</p>"
                   if ids else f"<h1>No results for &quot;{escape(query)}&quot;</h1>")
        return self._layout(f"Search: {query}", f"{heading}<ul>{items}</ul><nav aria-label='pages'>{' '.join(links)}</nav>",
                            query)

    def _product(self, product_id: str, request: SiteRequest, error: str = "") -> SiteResponse | str:
        product = self.products.get(product_id)
        if product is None:
            return not_found(f"No product {product_id}.")
        query, page = request.get("q"), request.get("page", "1")
        chosen_size, chosen_colour = request.get("size"), request.get("colour")
        size_options = "<option value=''>Choose a size</option>" + "".join(
            f"<option{' selected' if s == chosen_size else ''}>{escape(s)}</option>" for s in product.sizes)
        colour_options = "<option value=''>Choose a colour</option>" + "".join(
            f"<option{' selected' if c == chosen_colour else ''}>{escape(c)}</option>" for c in product.colours)
        features = "".join(f"<li>{escape(a)}</li>" for a in product.attributes)
        back = (f"<p><a id='back-to-results' href='/search?q={quote_plus(query)}&amp;page={escape(page)}'>Back to results</a></p>"
                if query else "")
        body = (f"{back}<h1>{escape(product.title)}</h1><p>Price: {price(product.price)}</p>"
                f"<p>Rating: {product.rating} out of 5</p><h2>Features</h2><ul>{features}</ul>"
                + (f"<p class='error' role='alert'>{escape(error)}</p>" if error else "")
                + f"<form method='post' action='/cart/add'><input type='hidden' name='product' value='{product.id}'>"
                f"<input type='hidden' name='q' value='{escape(query)}'><input type='hidden' name='page' value='{escape(page)}'>"
                f"<label for='size'>Size</label> <select id='size' name='size'>{size_options}</select> "
                f"<label for='colour'>Colour</label> <select id='colour' name='colour'>{colour_options}</select> "
                "<button id='add-to-cart'>Add to cart</button></form>")
        return self._layout(product.title, body, query)

    def _add(self, request: SiteRequest) -> SiteResponse | str:
        product = self.products.get(request.get("product"))
        if product is None:
            return not_found("That product does not exist.")
        size, colour = request.get("size"), request.get("colour")
        missing = [name for name, value, allowed in (("size", size, product.sizes), ("colour", colour, product.colours))
                   if value not in allowed]
        if missing:
            return self._product(product.id, request, f"Please choose a {' and a '.join(missing)}.")
        self.state["cart"].append({"line": f"L{self._next_line}", "product": product.id, "size": size,
                                   "colour": colour, "price": product.price})
        self._next_line += 1
        return redirect("/cart")

    def _cart(self) -> str:
        lines = self.state["cart"]
        if not lines:
            return self._layout("Cart", "<h1>Your cart is empty</h1><p><a id='continue-shopping' href='/'>Continue shopping</a></p>")
        rows = "".join(
            f"<tr><td>{escape(self.products[line['product']].title)}</td><td>{escape(line['size'])}</td>"
            f"<td>{escape(line['colour'])}</td><td>{price(line['price'])}</td><td><form method='post' action='/cart/remove'>"
            f"<input type='hidden' name='line' value='{line['line']}'><button id='remove-{line['line']}'>Remove</button>"
            "</form></td></tr>" for line in lines)
        total = sum(line["price"] for line in lines)
        body = ("<h1>Your cart</h1><table><thead><tr><th>Product</th><th>Size</th><th>Colour</th><th>Price</th><th></th>"
                f"</tr></thead><tbody>{rows}</tbody></table><p>Total: {price(total)}</p>"
                "<p><a id='checkout' href='/checkout'>Proceed to checkout</a> "
                "<a id='continue-shopping' href='/'>Continue shopping</a></p>")
        return self._layout("Cart", body)

    def _checkout(self, request: SiteRequest) -> SiteResponse | str:
        lines = self.state["cart"]
        if request.method == "POST":
            if not lines:
                return redirect("/cart")
            number = f"HO-{len(self.state['orders']) + 1001}"
            self.state["orders"].append({"number": number, "items": [dict(line) for line in lines],
                                         "total": round(sum(line["price"] for line in lines), 2)})
            self.state["cart"] = []
            return redirect(f"/orders/{number}")
        if not lines:
            return self._layout("Checkout", "<h1>Checkout</h1><p>Your cart is empty.</p>")
        items = "".join(f"<li>{escape(self.products[line['product']].title)}, size {escape(line['size'])}, "
                        f"{escape(line['colour'])}: {price(line['price'])}</li>" for line in lines)
        total = sum(line["price"] for line in lines)
        body = (f"<h1>Checkout</h1><h2>Order summary</h2><ul>{items}</ul><p>Total: {price(total)}</p>"
                "<p>Shipping to the address on your account. Free standard delivery.</p>"
                "<form method='post' action='/checkout'><button id='place-order'>Place order</button></form>"
                "<p><a id='back-to-cart' href='/cart'>Back to cart</a></p>")
        return self._layout("Checkout", body)

    def _order(self, number: str) -> SiteResponse | str:
        order = next((o for o in self.state["orders"] if o["number"] == number), None)
        if order is None:
            return not_found(f"No order {number}.")
        items = "".join(f"<li>{escape(self.products[line['product']].title)}, size {escape(line['size'])}, "
                        f"{escape(line['colour'])}</li>" for line in order["items"])
        return self._layout(f"Order {number}", f"<h1>Thank you! Order {number} is placed.</h1><ul>{items}</ul>"
                                               f"<p>Total: {price(order['total'])}</p>")


def reward(task, state: dict, answer: str | None) -> float:
    """WebShop-style reward for the last order: matched (attributes + options + price bound) / requested.

    The requested category counts as an attribute. An order with several items scores its best
    item at half weight, so buying extra things never earns 1.0.
    """
    wanted = task.expected_state["order"]
    if not state["orders"]:
        return 0.0
    products = catalogue(task.initial_state["catalogue_seed"])
    order = state["orders"][-1]
    best = 0.0
    for line in order["items"]:
        product = products[line["product"]]
        have = set(product.attributes) | {product.category}
        matched = sum(attribute in have for attribute in wanted["attributes"])
        matched += sum(line[name] == value for name, value in wanted["options"].items())
        matched += product.price <= wanted["max_price"]
        best = max(best, matched / (len(wanted["attributes"]) + len(wanted["options"]) + 1))
    return best if len(order["items"]) == 1 else best / 2


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
