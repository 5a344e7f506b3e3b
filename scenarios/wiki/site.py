"""The Atlas of Elaria: an information site about a fictional country's regions, cities and rivers.

Menus, tables and linked pages; a paginated city index. Everything is generated from a seed, so
every fact has one right answer that only the site knows (nothing can be answered from memory).
The site has no state to change: tasks are questions, checked through the answer's required facts.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from trajalign.envs.web_site import SiteRequest, SiteResponse, escape, not_found

INDEX_PAGE_SIZE = 12
SYLLABLES = ["ar", "bel", "cor", "dan", "el", "fen", "gal", "hal", "is", "jor", "kel", "lor", "mar", "nor", "os",
             "pen", "quin", "ros", "sel", "tor", "ul", "vel", "wen", "yar", "zan", "bri", "cas", "dor", "eth", "fal"]
ENDINGS = ["ford", "wick", "ton", "mere", "holm", "by", "stead", "haven", "gate", "moor", "vale", "burg"]
FIRST = ["Ada", "Bruno", "Celia", "Dmitri", "Esme", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Katya", "Luca",
         "Mira", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tamsin", "Viktor"]
LAST = ["Albescu", "Brandt", "Corvin", "Delacroix", "Eriksen", "Falk", "Gorski", "Halloran", "Ivanek", "Jansen",
        "Kovac", "Lindqvist", "Moreau", "Novak", "Oduya", "Petrov", "Quist", "Rasmussen", "Szabo", "Varga"]
SEAS = ["the Amber Sea", "the Grey Gulf", "Lake Orun", "the Northern Bight"]
LANDMARKS = ["an old stone bridge", "a clock tower", "a salt market", "a lighthouse", "a botanical garden",
             "a cathedral", "a fortress", "a glass museum", "a river harbour", "an observatory"]


@dataclass(frozen=True)
class City:
    slug: str
    name: str
    region: str
    population: int
    area: int
    founded: int
    elevation: int
    mayor: str
    river: str | None
    landmark: str


@dataclass(frozen=True)
class Region:
    slug: str
    name: str
    capital: str  # city slug
    governor: str
    area: int
    established: int


@dataclass(frozen=True)
class River:
    slug: str
    name: str
    length: int
    source: str  # region slug
    mouth: str


@dataclass(frozen=True)
class Atlas:
    regions: dict[str, Region]
    cities: dict[str, City]
    rivers: dict[str, River]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@functools.lru_cache(maxsize=4)
def atlas(seed: int) -> Atlas:
    rng = random.Random(seed)
    used: set[str] = set()

    def name(ending: bool) -> str:
        while True:
            stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 2)))
            text = stem + (rng.choice(ENDINGS) if ending else "ia")
            if text not in used and len(text) >= 5:
                used.add(text)
                return text.title()

    def person() -> str:
        return f"{rng.choice(FIRST)} {rng.choice(LAST)}"

    region_names = [name(False) for _ in range(7)]
    rivers = {}
    for _ in range(9):
        river_name = name(False).removesuffix("ia") + " River"
        rivers[slug(river_name)] = River(slug(river_name), river_name, rng.randint(40, 900),
                                         slug(rng.choice(region_names)), rng.choice(SEAS))
    regions, cities = {}, {}
    for region_name in region_names:
        members = []
        for _ in range(rng.randint(8, 11)):
            city_name = name(True)
            city = City(slug(city_name), city_name, slug(region_name), rng.randint(2_000, 900_000), rng.randint(5, 400),
                        rng.randint(880, 1950), rng.randint(2, 1800), person(),
                        rng.choice([*rivers, None, None]), rng.choice(LANDMARKS))
            cities[city.slug] = city
            members.append(city)
        capital = max(members, key=lambda c: c.population * rng.uniform(0.5, 1.0))
        regions[slug(region_name)] = Region(slug(region_name), region_name, capital.slug, person(),
                                            sum(c.area for c in members) * rng.randint(3, 9), rng.randint(1100, 1900))
    return Atlas(regions, cities, rivers)


class WikiSite:
    """The atlas, read-only. `initial_state`: atlas_seed."""

    def __init__(self, initial_state: dict):
        self.atlas = atlas(initial_state["atlas_seed"])
        self.state: dict = {}

    def handle(self, request: SiteRequest) -> SiteResponse | str:
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/":
            return self._home()
        if path == "/about":
            return self._layout("About the atlas", "<p>The Atlas of Elaria describes the regions, cities and rivers "
                                                   "of Elaria. Figures are from the last census.</p>")
        if path == "/regions":
            return self._regions()
        if path == "/cities":
            return self._index(request.get("page", "1"))
        if path == "/rivers":
            return self._rivers()
        if len(parts) == 2 and parts[0] == "regions" and parts[1] in self.atlas.regions:
            return self._region(self.atlas.regions[parts[1]])
        if len(parts) == 2 and parts[0] == "cities" and parts[1] in self.atlas.cities:
            return self._city(self.atlas.cities[parts[1]])
        if len(parts) == 2 and parts[0] == "rivers" and parts[1] in self.atlas.rivers:
            return self._river(self.atlas.rivers[parts[1]])
        return not_found()

    def _layout(self, title: str, body: str) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)} - Atlas of Elaria</title>"
                "<style>body{font-family:serif;max-width:880px;margin:auto}nav a{margin-right:1em}"
                "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
                "<header><nav aria-label='Main menu'><a id='nav-home' href='/'>Atlas of Elaria</a> "
                "<a id='nav-regions' href='/regions'>Regions</a> <a id='nav-cities' href='/cities'>City index</a> "
                "<a id='nav-rivers' href='/rivers'>Rivers</a> <a id='nav-about' href='/about'>About</a></nav></header>"
                f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")

    def _home(self) -> str:
        atlas = self.atlas
        return self._layout("Atlas of Elaria", f"<p>Elaria has {len(atlas.regions)} regions, {len(atlas.cities)} "
                                               f"cities and {len(atlas.rivers)} major rivers. Use the menu to browse "
                                               "them.</p>")

    def _regions(self) -> str:
        rows = "".join(
            f"<tr><td><a id='region-{r.slug}' href='/regions/{r.slug}'>{escape(r.name)}</a></td>"
            f"<td>{escape(self.atlas.cities[r.capital].name)}</td><td>{r.area}</td></tr>"
            for r in sorted(self.atlas.regions.values(), key=lambda r: r.name))
        return self._layout("Regions", "<table><thead><tr><th>Region</th><th>Capital</th><th>Area (km²)</th></tr>"
                                       f"</thead><tbody>{rows}</tbody></table>")

    def _region(self, region: Region) -> str:
        capital = self.atlas.cities[region.capital]
        members = sorted((c for c in self.atlas.cities.values() if c.region == region.slug), key=lambda c: c.name)
        rows = "".join(f"<tr><td><a id='city-{c.slug}' href='/cities/{c.slug}'>{escape(c.name)}</a></td>"
                       f"<td>{c.population}</td><td>{c.area}</td><td>{c.founded}</td></tr>" for c in members)
        body = ("<table aria-label='Region facts'><tbody>"
                f"<tr><th scope='row'>Capital</th><td><a id='capital-link' href='/cities/{capital.slug}'>{escape(capital.name)}</a></td></tr>"
                f"<tr><th scope='row'>Governor</th><td>{escape(region.governor)}</td></tr>"
                f"<tr><th scope='row'>Area</th><td>{region.area} km²</td></tr>"
                f"<tr><th scope='row'>Established</th><td>{region.established}</td></tr></tbody></table>"
                f"<h2>Cities of {escape(region.name)}</h2><table><thead><tr><th>City</th><th>Population</th>"
                f"<th>Area (km²)</th><th>Founded</th></tr></thead><tbody>{rows}</tbody></table>")
        return self._layout(region.name, body)

    def _index(self, page_text: str) -> str:
        cities = sorted(self.atlas.cities.values(), key=lambda c: c.name)
        pages = -(-len(cities) // INDEX_PAGE_SIZE)
        page = min(max(int(page_text) if page_text.isdigit() else 1, 1), pages)
        shown = cities[(page - 1) * INDEX_PAGE_SIZE: page * INDEX_PAGE_SIZE]
        rows = "".join(f"<tr><td><a id='city-{c.slug}' href='/cities/{c.slug}'>{escape(c.name)}</a></td>"
                       f"<td>{escape(self.atlas.regions[c.region].name)}</td><td>{c.population}</td></tr>" for c in shown)
        links = []
        if page > 1:
            links.append(f"<a id='prev-page' href='/cities?page={page - 1}'>Previous page</a>")
        if page < pages:
            links.append(f"<a id='next-page' href='/cities?page={page + 1}'>Next page</a>")
        body = (f"<p>Cities {shown[0].name} to {shown[-1].name} (page {page} of {pages}), in alphabetical order.</p>"
                "<table><thead><tr><th>City</th><th>Region</th><th>Population</th></tr></thead>"
                f"<tbody>{rows}</tbody></table><nav aria-label='Pages'>{' '.join(links)}</nav>")
        return self._layout("City index", body)

    def _city(self, city: City) -> str:
        region = self.atlas.regions[city.region]
        river = self.atlas.rivers.get(city.river) if city.river else None
        river_cell = (f"<a id='river-link' href='/rivers/{river.slug}'>{escape(river.name)}</a>" if river else "none")
        body = ("<table aria-label='City facts'><tbody>"
                f"<tr><th scope='row'>Region</th><td><a id='region-link' href='/regions/{region.slug}'>{escape(region.name)}</a></td></tr>"
                f"<tr><th scope='row'>Population</th><td>{city.population}</td></tr>"
                f"<tr><th scope='row'>Area</th><td>{city.area} km²</td></tr>"
                f"<tr><th scope='row'>Founded</th><td>{city.founded}</td></tr>"
                f"<tr><th scope='row'>Elevation</th><td>{city.elevation} m</td></tr>"
                f"<tr><th scope='row'>Mayor</th><td>{escape(city.mayor)}</td></tr>"
                f"<tr><th scope='row'>River</th><td>{river_cell}</td></tr></tbody></table>"
                f"<p>{escape(city.name)} is a city in {escape(region.name)}, known for {escape(city.landmark)}.</p>")
        return self._layout(city.name, body)

    def _rivers(self) -> str:
        rows = "".join(f"<tr><td><a id='river-{r.slug}' href='/rivers/{r.slug}'>{escape(r.name)}</a></td><td>{r.length} km</td></tr>"
                       for r in sorted(self.atlas.rivers.values(), key=lambda r: r.name))
        return self._layout("Rivers", "<table><thead><tr><th>River</th><th>Length</th></tr></thead>"
                                      f"<tbody>{rows}</tbody></table>")

    def _river(self, river: River) -> str:
        along = sorted((c for c in self.atlas.cities.values() if c.river == river.slug), key=lambda c: c.name)
        items = "".join(f"<li><a id='city-{c.slug}' href='/cities/{c.slug}'>{escape(c.name)}</a></li>" for c in along)
        source = self.atlas.regions[river.source]
        body = ("<table aria-label='River facts'><tbody>"
                f"<tr><th scope='row'>Length</th><td>{river.length} km</td></tr>"
                f"<tr><th scope='row'>Source</th><td><a id='source-link' href='/regions/{source.slug}'>{escape(source.name)}</a></td></tr>"
                f"<tr><th scope='row'>Mouth</th><td>{escape(river.mouth)}</td></tr></tbody></table>"
                f"<h2>Cities along the river</h2><ul>{items or '<li>none</li>'}</ul>")
        return self._layout(river.name, body)
