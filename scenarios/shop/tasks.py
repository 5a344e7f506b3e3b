"""Seeded shop tasks: buy a product with the requested attributes, size, colour and price bound.

The oracle searches with the requested words, pages through the results to the product the task
was made from, picks the size and colour, adds it to the cart, checks out and answers. One task in
five starts with an unwanted item in the cart that must be removed first. Groups are
(category, requested attributes): the test split asks for combinations train never does.
"""

import math
import random

from trajalign.envs.scenario import import_sibling

CATALOGUE_SEED = 7


def generate_tasks(count: int, seed: int) -> list[dict]:
    site = import_sibling(__file__, "site.py")  # fresh: an edited site is picked up
    products = list(site.catalogue(CATALOGUE_SEED).values())
    rng = random.Random(seed)
    tasks = []
    while len(tasks) < count:
        task = _task(site, products, rng, len(tasks))
        if task is not None:
            tasks.append(task)
    return tasks


def _task(site, products, rng, index):
    product = rng.choice(products)
    attributes = rng.sample(product.attributes, 2)
    size, colour = rng.choice(product.sizes), rng.choice(product.colours)
    max_price = math.ceil(product.price * rng.uniform(1.05, 1.5) / 5) * 5
    query = " ".join([*attributes, product.category])
    results = site.search(CATALOGUE_SEED, query)
    position = results.index(product.id)
    page = position // site.PAGE_SIZE
    if page > 3:  # keep the search within four pages of results
        return None
    cart, oracle = [], []
    extra = None
    if rng.random() < 0.2:
        extra = rng.choice([p for p in products if p.category != product.category])
        cart = [{"line": "L1", "product": extra.id, "size": extra.sizes[0], "colour": extra.colours[0],
                 "price": extra.price}]
    oracle += [{"name": "type", "arguments": {"id": "search-input", "text": query}},
               {"name": "click", "arguments": {"id": "search-button"}}]
    oracle += [{"name": "click", "arguments": {"id": "next-page"}}] * page
    oracle += [{"name": "click", "arguments": {"id": f"product-{product.id}"}},
               {"name": "select", "arguments": {"id": "size", "option": size}},
               {"name": "select", "arguments": {"id": "colour", "option": colour}},
               {"name": "click", "arguments": {"id": "add-to-cart"}}]
    if extra is not None:
        oracle.append({"name": "click", "arguments": {"id": "remove-L1"}})
    oracle += [{"name": "click", "arguments": {"id": "checkout"}},
               {"name": "click", "arguments": {"id": "place-order"}},
               {"name": "answer", "arguments": {"text": f"I bought the {product.title} in {colour}, size {size}."}}]
    wording = rng.choice([
        "I'm looking for {attrs} {category} in {colour}, size {size}, for less than ${price}. Please buy it for me.",
        "Find me {attrs} {category}, colour {colour}, size {size}, priced under ${price}, and order it.",
        "Please order {attrs} {category} (size {size}, {colour}) that costs less than ${price}.",
    ])
    goal = wording.format(attrs=" and ".join(attributes), category=product.category, colour=colour, size=size,
                          price=max_price)
    if extra is not None:
        goal += f" My cart also has a {extra.title} I don't want any more; remove it before you check out."
    return {
        "id": f"shop-{index:04d}",
        "goal": goal,
        "group": f"{product.category}/{'+'.join(sorted(attributes))}",
        "initial_state": {"catalogue_seed": CATALOGUE_SEED, "cart": cart},
        "expected_state": {"order": {"attributes": [*attributes, product.category],
                                     "options": {"size": size, "colour": colour}, "max_price": max_price}},
        "oracle": oracle,
    }
