"""Seeded atlas questions: find a fact by navigating menus, tables and linked pages, then answer it.

Kinds: a fact about a city whose region is named (regions menu, region table, city page) or not
(the paginated city index), the mayor of a region's capital, the most populous city of a region
(read a table), and the length or source region of the river through a city (two hops).
The answer must contain the fact. Groups are (kind, city or region), so test questions are about
places train never asks about in that way.
"""

import random

from trajalign.envs.scenario import import_sibling

ATLAS_SEED = 3
FACTS = {"population": ("what is the population of {city}", lambda c: str(c.population)),
         "elevation": ("what is the elevation of {city}, in metres", lambda c: str(c.elevation)),
         "founded": ("in what year was {city} founded", lambda c: str(c.founded)),
         "mayor": ("who is the mayor of {city}", lambda c: c.mayor),
         "area": ("what is the area of {city}, in square kilometres", lambda c: str(c.area))}
KINDS = ["fact_in_region", "fact_by_index", "capital_mayor", "largest_city", "river_length", "river_source"]


def generate_tasks(count: int, seed: int) -> list[dict]:
    site = import_sibling(__file__, "site.py")  # fresh: an edited site is picked up
    atlas = site.atlas(ATLAS_SEED)
    rng = random.Random(seed)
    return [_task(site, atlas, rng, index) for index in range(count)]


def _to_city_by_region(city):
    return [_click("nav-regions"), _click(f"region-{city.region}"), _click(f"city-{city.slug}")]


def _to_city_by_index(site, atlas, city):
    names = sorted(c.name for c in atlas.cities.values())
    page = names.index(city.name) // site.INDEX_PAGE_SIZE
    return [_click("nav-cities")] + [_click("next-page")] * page + [_click(f"city-{city.slug}")]


def _click(element_id):
    return {"name": "click", "arguments": {"id": element_id}}


def _task(site, atlas, rng, index):
    kind = KINDS[index % len(KINDS)]
    cities = list(atlas.cities.values())
    city = rng.choice(cities)
    region = atlas.regions[city.region]
    intro = rng.choice(["According to the Atlas of Elaria, ", "Using the Atlas of Elaria site, find out: ",
                        "Look it up in the Atlas of Elaria: "])
    if kind in ("fact_in_region", "fact_by_index"):
        fact = rng.choice(sorted(FACTS))
        question, value = FACTS[fact]
        where = f" (in the region of {region.name})" if kind == "fact_in_region" else ""
        goal = intro + question.format(city=city.name + where) + "?"
        path = _to_city_by_region(city) if kind == "fact_in_region" else _to_city_by_index(site, atlas, city)
        answer, group = value(city), f"{kind}/{city.slug}/{fact}"
    elif kind == "capital_mayor":
        capital = atlas.cities[region.capital]
        goal = intro + f"who is the mayor of the capital city of {region.name}?"
        path = [_click("nav-regions"), _click(f"region-{region.slug}"), _click("capital-link")]
        answer, group = capital.mayor, f"{kind}/{region.slug}"
    elif kind == "largest_city":
        members = [c for c in cities if c.region == region.slug]
        largest = max(members, key=lambda c: c.population)
        goal = intro + f"which city in {region.name} has the largest population?"
        path = [_click("nav-regions"), _click(f"region-{region.slug}")]
        answer, group = largest.name, f"{kind}/{region.slug}"
    else:
        with_river = [c for c in cities if c.river]
        city = rng.choice(with_river)
        river = atlas.rivers[city.river]
        to_city = (_to_city_by_region(city) if rng.random() < 0.5 else _to_city_by_index(site, atlas, city))
        if kind == "river_length":
            goal = intro + f"how long, in kilometres, is the river that flows through {city.name}?"
            answer = str(river.length)
        else:
            goal = intro + f"in which region does the river that flows through {city.name} have its source?"
            answer = atlas.regions[river.source].name
        path = to_city + [_click("river-link")]
        group = f"{kind}/{city.slug}"
    return {"id": f"wiki-{index:04d}", "goal": goal, "group": group, "initial_state": {"atlas_seed": ATLAS_SEED},
            "required_outputs": [answer],
            "oracle": path + [{"name": "answer", "arguments": {"text": f"The answer is {answer}."}}]}
