"""A small, seeded, built-in retrieval collection (the ``jaxir quickstart`` default).

The collection is generated, not downloaded, so the quickstart and the tests run with
no data. It is a real retrieval task, hard for exact term matching and learnable by a
trained encoder:

* **Topics** are made-up entities in four domains (towns, animal species, companies,
  historical figures). Names combine two words from small lists ("Amber Haven",
  "Dusky Heron"), so each name word is shared by many entities.
* Every entity has six **facts** (slot = value, e.g. town industry = fishing) and three
  **documents**, each stating two of the facts (plus an intro and filler sentences).
  The three documents of one entity are distractors for each other (same name,
  different facts); documents of other entities with the same fact values are
  distractors too (same wording, different name).
* Every fact value has three **surface forms** ("fishing" / "catching fish" /
  "fisheries"); a document uses one, a query asks with a different one three times out
  of four, so a query shares only part of its vocabulary with its relevant document.
  The paraphrase tables are the same for train and test queries: a model trained on
  the train split can learn them, BM25 cannot.
* 80% of queries name the entity and ask for one or two facts (exactly one relevant
  document); 20% give only the kind and two facts (every document of that domain that
  states both facts is relevant).

With the defaults (667 topics) there are 2,001 documents, 600 train and 200 test
queries; generation takes well under a second. BM25 (bm25s, Snowball stemming, English
stopwords) reaches nDCG@10 of about 0.6 on the test split (see ``tests/data``).

Example:
    >>> beir = make_collection(num_topics=8, num_train_queries=10, num_test_queries=6)
    >>> len(beir.corpus), len(beir.queries), sum(map(len, beir.qrels.values())) >= 6
    (24, 6, True)
    >>> make_collection(num_topics=8, num_train_queries=10, num_test_queries=6).qrels == beir.qrels
    True
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
from collections.abc import Sequence

from jaxir.data.records import (
    BeirCollection,
    Document,
    PathLike,
    Qrels,
    Query,
    write_corpus,
    write_qrels,
    write_queries,
)

__all__ = ["make_collection", "write_collection"]


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One kind of fact: sentence templates for documents and queries, and its values.

    Each value is a tuple of interchangeable surface forms (paraphrases).
    """

    doc_templates: tuple[str, ...]
    query_templates: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Domain:
    kinds: tuple[str, ...]
    first_words: tuple[str, ...]
    second_words: tuple[str, ...]
    slots: tuple[_Slot, ...]
    fillers: tuple[str, ...]
    # How documents refer to the entity: first mention and later mentions.
    first_mention: str
    later_mention: str


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _slot(doc_templates: str, query_templates: str, values: str) -> _Slot:
    """Build a slot from ``" | "``-separated templates and one value (its forms) a line."""
    return _Slot(
        tuple(doc_templates.split(" | ")),
        tuple(query_templates.split(" | ")),
        tuple(tuple(line.strip().split(" | ")) for line in values.strip().splitlines()),
    )


_INTROS = (
    "{name} is a {kind}.",
    "This article is about the {kind} {name}.",
    "{name} is a {kind} described in several sources.",
)

_NAMED_QUERIES = ("{name} {facts}", "{name} {kind} {facts}", "what about {name} {facts}")
_UNNAMED_QUERIES = ("{kind} {facts}", "which {kind} {facts}", "find a {kind} {facts}")

_TOWN = _Domain(
    kinds=("town", "city", "settlement"),
    first_words=_words(
        """
        Amber Silver Raven Stone Oak Iron Willow Cedar Frost Golden Maple Ash Copper
        Elder Thorn Mist Red Black White Green
        """
    ),
    second_words=_words("Haven Ford Bridge Port Field Wick Moor Vale Gate Crest Hollow Cross"),
    first_mention="{name}",
    later_mention="the {kind}",
    slots=(
        _slot(
            "The economy of {n} depends on {v}. | Most people in {n} work in {v}. | {n} grew rich through {v}.",
            "{v} | jobs in {v} | livelihood from {v}",
            """
            shipbuilding | building ships | shipyards
            textile mills | weaving cloth | fabric production
            copper mining | digging ore | mines
            fishing | catching fish | fisheries
            winemaking | vineyards | grape growing
            logging | timber trade | cutting lumber
            tourism | visitors and travellers | holiday trade
            pottery | ceramics | clay workshops
            """,
        ),
        _slot(
            "{n} has {v}. | The weather in {n} is known for {v}. | Visitors to {n} remember its {v}.",
            "{v} | weather with {v} | {v} climate",
            """
            cold winters | freezing winters | harsh snowy seasons
            hot summers | scorching summers | blazing heat
            heavy rainfall | frequent rain | wet weather
            dry air | arid weather | little rain
            constant fog | misty mornings | thick haze
            strong winds | fierce gales | stormy gusts
            mild springs | gentle temperate seasons | pleasant mild weather
            """,
        ),
        _slot(
            "{n} is famous for its {v}. | The {v} is the best known sight in {n}. | Tourists come to {n} to see the {v}.",
            "{v} | famous {v} | landmark {v}",
            """
            old stone bridge | ancient bridge of stone | medieval crossing
            grand cathedral | great church | large basilica
            clock tower | tall bell tower | town clock
            harbour lighthouse | coastal beacon | light tower by the harbour
            royal palace | residence of the king | former royal court
            botanical garden | plant garden | collection of rare flowers
            city walls | fortified ramparts | defensive walls
            open air market | street bazaar | outdoor market square
            """,
        ),
        _slot(
            "Each year {n} holds a {v}. | {n} is known for its {v}. | The {v} in {n} draws large crowds.",
            "{v} | annual {v} | yearly event {v}",
            """
            spring flower festival | blossom celebration | yearly flower fair
            autumn harvest fair | harvest celebration | fall market days
            winter lantern parade | festival of lights | lantern procession
            summer music festival | open air concerts | music gathering
            boat race | rowing contest | regatta on the water
            cheese fair | dairy market | festival of cheeses
            horse show | equestrian contest | riding competition
            """,
        ),
        _slot(
            "{n} lies near the {v}. | {n} was built close to the {v}. | {n} is located by the {v}.",
            "near the {v} | {v} | located at the {v}",
            """
            river delta | mouth of the river | place where the river meets the sea
            mountain pass | high valley between peaks | alpine saddle
            northern coast | shore in the north | northern seaside
            southern plains | flat grasslands of the south | lowland prairie
            forest edge | border of the woods | woodland fringe
            lake shore | banks of a lake | lakeside
            volcanic island | island with a volcano | isle of lava rock
            """,
        ),
        _slot(
            "{n} was founded in the {v}. | The first settlers reached {n} in the {v}. | Records of {n} begin in the {v}.",
            "founded in the {v} | {v} | history since the {v}",
            """
            ninth century | 800s | early middle ages
            twelfth century | 1100s | high middle ages
            fifteenth century | 1400s | late middle ages
            seventeenth century | 1600s | age of exploration
            nineteenth century | 1800s | industrial era
            roman period | roman times | days of the roman empire
            """,
        ),
    ),
    fillers=(
        "Its population has changed little over recent decades.",
        "Local records are kept in the municipal archive.",
        "A regional railway connects it with neighbouring districts.",
        "Several old families still live in the historic quarter.",
        "The local council meets in a building near the main square.",
        "Guidebooks often mention it only briefly.",
    ),
)


_SPECIES = _Domain(
    kinds=("species", "animal", "creature"),
    first_words=_words(
        """
        Dusky Spotted Crested Striped Pale Lesser Greater Golden Ashy Ruddy Painted
        Hooded Banded Silky Spiny Masked Woolly Horned Bearded Sooty
        """
    ),
    second_words=_words("Heron Lizard Toad Owl Moth Beetle Otter Finch Eel Shrew Gecko Plover"),
    first_mention="the {name}",
    later_mention="this {kind}",
    slots=(
        _slot(
            "{n} lives in {v}. | Populations of {n} are found in {v}. | The natural home of {n} is {v}.",
            "lives in {v} | {v} | found in {v}",
            """
            wetlands | marshes | swamps
            deserts | sandy dunes | arid wastelands
            mountain forests | highland woods | alpine timberland
            coral reefs | tropical reefs | warm shallow seas
            grasslands | open meadows | savanna
            caves | underground caverns | dark grottos
            rainforests | tropical jungle | dense humid forest
            rocky coasts | sea cliffs | stony shorelines
            """,
        ),
        _slot(
            "{n} feeds on {v}. | The diet of {n} consists mainly of {v}. | {n} searches for {v} to eat.",
            "eats {v} | {v} diet | feeding on {v}",
            """
            insects | bugs | beetles and flies
            seeds | grains | kernels
            small fish | minnows | tiny fishes
            fruit | berries | ripe fruits
            leaves | foliage | green shoots
            carrion | dead animals | carcasses
            nectar | flower juice | sweet pollen
            snails | slugs | molluscs
            """,
        ),
        _slot(
            "{n} is {v}. | Observers describe {n} as {v}. | Field studies show that {n} is {v}.",
            "{v} | {v} behaviour | known to be {v}",
            """
            nocturnal | active at night | awake after dark
            migratory | travelling long distances every season | a seasonal wanderer
            social and lives in colonies | living in large groups | found in big flocks
            solitary | living alone | avoiding company
            a hibernator | asleep through the winter | dormant in cold months
            territorial | defending its patch fiercely | aggressive toward intruders
            shy | timid | easily frightened
            """,
        ),
        _slot(
            "{n} has {v}. | {n} can be recognised by {v}. | Adults of {n} show {v}.",
            "with {v} | {v} | marked by {v}",
            """
            red markings | crimson patches | scarlet spots
            a blue sheen | an azure tint | cobalt colouring
            black stripes | dark bands | ebony streaks
            a white belly | a pale underside | a snowy chest
            green scales | emerald skin | olive coloured hide
            yellow eyes | golden irises | an amber gaze
            brown speckles | tan freckles | a mottled brown coat
            """,
        ),
        _slot(
            "{n} is {v}. | In size {n} is {v}. | Specimens of {n} are {v}.",
            "{v} | size {v} | {v} in size",
            """
            tiny | very small | no bigger than a thumb
            large | big | heavy bodied
            medium sized | of average size | moderately built
            long and slender | thin and elongated | lean with a long body
            stocky | thickset | short and broad
            """,
        ),
        _slot(
            "{n} is {v}. | Conservation surveys list {n} as {v}. | Today {n} is {v}.",
            "{v} | status {v} | conservation {v}",
            """
            endangered | at risk of extinction | threatened
            common | abundant | widespread
            rarely seen | elusive | seldom observed
            protected by law | legally safeguarded | under legal protection
            recovering in numbers | increasing again | a rebounding population
            declining | shrinking in numbers | dwindling
            """,
        ),
    ),
    fillers=(
        "Its scientific classification was revised several times.",
        "Field guides include a short description of it.",
        "Little is known about its breeding cycle.",
        "Researchers continue to survey its range.",
        "Museum collections hold a few preserved specimens.",
        "It was first described by a travelling naturalist.",
    ),
)


_COMPANY = _Domain(
    kinds=("company", "firm", "corporation"),
    first_words=_words(
        """
        Nova Apex Summit Vertex Orbit Harbor Pioneer Crystal Atlas Zenith Quantum Beacon
        Cobalt Falcon Meridian Nimbus Polar Sterling Titan Vantage
        """
    ),
    second_words=_words(
        """
        Systems Labs Works Industries Foods Motors Dynamics Holdings Partners Networks
        Materials Robotics
        """
    ),
    first_mention="{name}",
    later_mention="the {kind}",
    slots=(
        _slot(
            "{n} makes {v}. | The main product of {n} is {v}. | {n} is best known for its {v}.",
            "{v} | maker of {v} | produces {v}",
            """
            electric bicycles | battery powered bikes | e-bikes
            frozen meals | ready made dinners | microwave food
            solar panels | photovoltaic modules | sun power cells
            medical scanners | hospital imaging machines | diagnostic equipment
            video games | computer games | gaming software
            farm tractors | agricultural vehicles | field machinery
            running shoes | athletic footwear | sneakers
            cloud storage | online data hosting | remote backup service
            """,
        ),
        _slot(
            "{n} sells mostly to the {v}. | Most revenue of {n} comes from the {v}. | {n} focuses on the {v}.",
            "{v} | selling to {v} | clients {v}",
            """
            european market | customers in europe | buyers across europe
            asian market | customers in asia | buyers across asia
            american market | customers in america | north american buyers
            african market | customers in africa | buyers across africa
            government sector | public agencies | state contracts
            hospital sector | healthcare providers | clinics and hospitals
            """,
        ),
        _slot(
            "{n} is a {v}. | Analysts describe {n} as a {v}. | {n} has grown into a {v}.",
            "{v} | a {v} | {v} business",
            """
            small startup | young venture | tiny new business
            large multinational | global giant | huge international group
            family owned business | family run enterprise | firm owned by one family
            cooperative owned by its workers | employee owned cooperative | worker cooperative
            mid sized manufacturer | medium scale producer | regional manufacturer
            """,
        ),
        _slot(
            "In its history {n} {v}. | Some years ago {n} {v}. | {n} {v} after a difficult decade.",
            "{v} | that {v} | history {v}",
            """
            went bankrupt | collapsed financially | filed for insolvency
            merged with a rival | combined with a competitor | joined forces with a rival
            was acquired by a larger group | was bought out | was taken over
            went public | listed its shares on the stock exchange | made a stock market debut
            moved its headquarters abroad | relocated its head office overseas | shifted its base to another country
            won a major lawsuit | prevailed in a big court case | won a legal battle
            """,
        ),
        _slot(
            "{n} was founded by {v}. | The founder of {n} was {v}. | {n} was started by {v}.",
            "founded by {v} | {v} founder | started by {v}",
            """
            a former teacher | an ex schoolteacher | someone who used to teach
            two engineers | a pair of engineers | two technical designers
            a retired pilot | an ex aviator | a former airline captain
            a university student | a college undergraduate | a young scholar
            a farmer | an agricultural worker | someone who worked the land
            a group of nurses | several nurses | nursing staff
            """,
        ),
        _slot(
            "{n} faced criticism over {v}. | A scandal involving {v} hurt {n}. | {n} was in the news because of {v}.",
            "{v} | scandal over {v} | criticised for {v}",
            """
            a product recall | recalled goods | withdrawn items
            a labour strike | a workers walkout | staff protests
            a data breach | leaked customer records | a hacking incident
            river pollution | dumping waste in a river | contaminated water
            tax avoidance | dodging taxes | unpaid taxes
            misleading advertising | false adverts | deceptive marketing
            """,
        ),
    ),
    fillers=(
        "Its annual report is published every spring.",
        "The board of directors meets four times a year.",
        "Industry analysts follow its results closely.",
        "It employs staff in several offices.",
        "Its logo was redesigned a few years ago.",
        "Trade magazines have profiled its managers.",
    ),
)


_PERSON = _Domain(
    kinds=("historical figure", "notable person", "public figure"),
    first_words=_words(
        """
        Ada Boris Clara Dmitri Elena Felix Greta Hugo Ines Jonas Karla Lucas Mira Nils
        Olga Pavel Rosa Stefan Tara Viktor
        """
    ),
    second_words=_words(
        "Marlow Hale Brandt Voss Kern Lund Novak Reyes Sato Weller Okafor Lindqvist"
    ),
    first_mention="{name}",
    later_mention="{last}",
    slots=(
        _slot(
            "{n} worked as a {v}. | {n} is remembered as a {v}. | By profession {n} was a {v}.",
            "{v} | who was a {v} | career as {v}",
            """
            painter | artist working in oils | portrait artist
            composer | writer of music | songwriter
            astronomer | stargazer | scientist of the heavens
            architect | building designer | planner of buildings
            poet | writer of verse | lyric author
            surgeon | operating doctor | physician who performed operations
            explorer | voyager | traveller to unknown lands
            chemist | laboratory scientist | researcher of chemical reactions
            """,
        ),
        _slot(
            "{n} was born in {v}. | {n} grew up in {v}. | The childhood of {n} was spent in {v}.",
            "born in {v} | {v} childhood | raised in {v}",
            """
            a fishing village | a small seaside hamlet | a coastal fishing community
            a mountain town | a highland village | an alpine settlement
            the capital | the largest city of the nation | the seat of government
            a farming valley | the rural countryside | an agricultural district
            a mining town | a colliery village | a community of miners
            a port city | a busy harbour town | a seaport
            """,
        ),
        _slot(
            "{n} {v}. | In later years {n} {v}. | It is recorded that {n} {v}.",
            "{v} | who {v} | person who {v}",
            """
            won a national prize | received a national award | was honoured by the nation
            founded a school | established an academy | started a college
            discovered a comet | found a new comet | first spotted a comet
            wrote a famous memoir | published an autobiography | told their life story in a book
            designed a famous bridge | planned a celebrated bridge | engineered a well known bridge
            led an expedition | headed a voyage of discovery | commanded an exploring party
            reformed the hospitals | improved hospital care | modernised medical wards
            """,
        ),
        _slot(
            "{n} lived in the {v}. | {n} was active during the {v}. | The work of {n} dates from the {v}.",
            "{v} | lived in the {v} | from the {v}",
            """
            sixteenth century | 1500s | renaissance era
            seventeenth century | 1600s | baroque period
            eighteenth century | 1700s | age of enlightenment
            nineteenth century | 1800s | victorian era
            early twentieth century | 1900s | years before the great wars
            """,
        ),
        _slot(
            "{n} {v}. | In old age {n} {v}. | Late in life {n} {v}.",
            "{v} | who {v} | later {v}",
            """
            died in poverty | ended life penniless | passed away poor
            retired to the countryside | moved to a farm in old age | withdrew to a rural home
            became a politician | entered government | served in parliament
            went blind | lost their eyesight | could no longer see
            emigrated overseas | moved to another continent | left the homeland for good
            taught at a university | became a professor | lectured to students
            """,
        ),
        _slot(
            "{n} was passionate about {v}. | In spare time {n} enjoyed {v}. | Friends knew {n} for a love of {v}.",
            "{v} | hobby {v} | loved {v}",
            """
            chess | board strategy games | playing chess matches
            sailing | boating | yachting
            beekeeping | keeping bees | tending hives
            gardening | growing flowers | tending plants
            mountaineering | climbing peaks | alpine climbing
            collecting stamps | philately | stamp albums
            playing the violin | fiddle music | string instrument practice
            """,
        ),
    ),
    fillers=(
        "Letters written by this figure survive in an archive.",
        "A short biography appeared after their death.",
        "Historians disagree about some details of their life.",
        "A portrait hangs in a regional museum.",
        "Several streets are named in their honour.",
        "Their correspondence with contemporaries was later published.",
    ),
)

_DOMAINS = (_TOWN, _SPECIES, _COMPANY, _PERSON)
_SLOTS_PER_DOC = 2
_DOCS_PER_TOPIC = 3  # six slots per domain, two per document
_SAME_FORM_PROB = 0.25  # how often a query reuses the document's wording of a fact
_UNNAMED_PROB = 0.2  # share of queries that describe facts without naming the entity
_TWO_FACT_PROB = 0.4  # share of named queries asking for both facts of the document


@dataclasses.dataclass(frozen=True)
class _Doc:
    domain: int
    topic: int
    facts: tuple[tuple[int, int], ...]  # (slot, value) pairs, sorted
    forms: tuple[int, ...]  # surface form used for each fact
    text: str
    title: str


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _make_docs(rng: random.Random, num_topics: int) -> tuple[list[_Doc], list[str]]:
    per_domain = [
        num_topics // len(_DOMAINS) + (i < num_topics % len(_DOMAINS)) for i in range(len(_DOMAINS))
    ]
    names: list[list[tuple[str, str]]] = []
    for domain, count in zip(_DOMAINS, per_domain):
        combos = [(a, b) for a in domain.first_words for b in domain.second_words]
        if count > len(combos):
            raise ValueError(
                f"num_topics={num_topics} needs {count} names per domain but only "
                f"{len(combos)} exist; use num_topics <= {len(combos) * len(_DOMAINS)}"
            )
        names.append(rng.sample(combos, count))
    docs: list[_Doc] = []
    topic_names: list[str] = []
    for d, domain in enumerate(_DOMAINS):
        for first, last in names[d]:
            topic = len(topic_names)
            name = f"{first} {last}"
            topic_names.append(name)
            values = [rng.randrange(len(slot.values)) for slot in domain.slots]
            slot_order = list(range(len(domain.slots)))
            rng.shuffle(slot_order)
            for j in range(_DOCS_PER_TOPIC):
                slots = sorted(slot_order[j * _SLOTS_PER_DOC : (j + 1) * _SLOTS_PER_DOC])
                kind = rng.choice(domain.kinds)
                mentions = [
                    domain.first_mention.format(name=name, kind=kind, last=last),
                    domain.later_mention.format(name=name, kind=kind, last=last),
                ]
                forms, facts_text = [], []
                for k, s in enumerate(slots):
                    slot = domain.slots[s]
                    form = rng.randrange(len(slot.values[values[s]]))
                    forms.append(form)
                    template = rng.choice(slot.doc_templates)
                    facts_text.append(
                        _sentence(
                            template.format(n=mentions[min(k, 1)], v=slot.values[values[s]][form])
                        )
                    )
                body = facts_text + rng.sample(domain.fillers, 2)
                rng.shuffle(body)
                intro = _sentence(rng.choice(_INTROS).format(name=name, kind=kind))
                docs.append(
                    _Doc(
                        domain=d,
                        topic=topic,
                        facts=tuple((s, values[s]) for s in slots),
                        forms=tuple(forms),
                        text=" ".join([intro, *body]),
                        title=name,
                    )
                )
    return docs, topic_names


def _ask(rng: random.Random, domain: _Domain, doc: _Doc, which: Sequence[int]) -> str:
    """Query wording of the facts ``which`` of ``doc``, mostly with other surface forms."""
    parts = []
    for k in which:
        slot_index, value = doc.facts[k]
        slot = domain.slots[slot_index]
        forms = slot.values[value]
        form = doc.forms[k]
        if rng.random() >= _SAME_FORM_PROB:
            form = rng.choice([f for f in range(len(forms)) if f != form])
        parts.append(rng.choice(slot.query_templates).format(v=forms[form]))
    return " and ".join(parts)


def _make_queries(
    rng: random.Random, docs: list[_Doc], topic_names: list[str], count: int
) -> tuple[list[str], list[dict[int, int]]]:
    if count > len(docs):
        raise ValueError(f"{count} queries need at least as many documents; got {len(docs)}")
    by_facts: dict[tuple[int, tuple[tuple[int, int], ...]], list[int]] = {}
    for i, doc in enumerate(docs):
        by_facts.setdefault((doc.domain, doc.facts), []).append(i)
    texts, relevant = [], []
    for target in rng.sample(range(len(docs)), count):
        doc = docs[target]
        domain = _DOMAINS[doc.domain]
        kind = rng.choice(domain.kinds)
        if rng.random() < _UNNAMED_PROB:
            facts = _ask(rng, domain, doc, range(len(doc.facts)))
            text = rng.choice(_UNNAMED_QUERIES).format(kind=kind, facts=facts)
            rel = by_facts[(doc.domain, doc.facts)]
        else:
            which = (
                range(len(doc.facts))
                if rng.random() < _TWO_FACT_PROB
                else [rng.randrange(len(doc.facts))]
            )
            facts = _ask(rng, domain, doc, which)
            name = topic_names[doc.topic]
            text = rng.choice(_NAMED_QUERIES).format(name=name, kind=kind, facts=facts)
            rel = [target]
        texts.append(text.lower())
        relevant.append(dict.fromkeys(rel, 1))
    return texts, relevant


def _generate(
    num_topics: int, num_train_queries: int, num_test_queries: int, seed: int
) -> tuple[list[Document], list[Query], dict[str, Qrels]]:
    if num_topics < 1 or num_train_queries < 0 or num_test_queries < 1:
        raise ValueError("need num_topics >= 1, num_train_queries >= 0 and num_test_queries >= 1")
    rng = random.Random(seed)
    docs, topic_names = _make_docs(rng, num_topics)
    order = list(range(len(docs)))
    rng.shuffle(order)  # ids say nothing about topics, siblings are not adjacent
    doc_id = {old: f"doc{new:05d}" for new, old in enumerate(order)}
    corpus = [Document(doc_id[old], docs[old].text, docs[old].title) for old in order]
    texts, relevant = _make_queries(rng, docs, topic_names, num_train_queries + num_test_queries)
    queries = [Query(f"q{i:04d}", t) for i, t in enumerate(texts)]
    qrels: dict[str, Qrels] = {"train": {}, "test": {}}
    for i, (query, rel) in enumerate(zip(queries, relevant)):
        split = "train" if i < num_train_queries else "test"
        qrels[split][query.id] = {
            doc_id[d]: grade for d, grade in sorted(rel.items(), key=lambda kv: doc_id[kv[0]])
        }
    return corpus, queries, qrels


def write_collection(
    out_dir: PathLike,
    *,
    num_topics: int = 667,
    num_train_queries: int = 600,
    num_test_queries: int = 200,
    seed: int = 0,
) -> pathlib.Path:
    """Write the synthetic collection in BEIR layout and return ``out_dir``.

    Files: ``corpus.jsonl`` (``3 * num_topics`` documents), ``queries.jsonl`` (train and
    test queries), ``qrels/train.tsv``, ``qrels/test.tsv``. Same arguments, same bytes.
    Read it back with :func:`jaxir.data.records.load_beir`.
    """
    return _write(out_dir, *_generate(num_topics, num_train_queries, num_test_queries, seed))


def _write(
    out_dir: PathLike, corpus: list[Document], queries: list[Query], qrels: dict[str, Qrels]
) -> pathlib.Path:
    out = pathlib.Path(out_dir)
    write_corpus(corpus, out / "corpus.jsonl")
    write_queries(queries, out / "queries.jsonl")
    for split, split_qrels in qrels.items():
        if split_qrels:
            write_qrels(split_qrels, out / "qrels" / f"{split}.tsv")
    return out


def make_collection(
    out_dir: PathLike | None = None,
    *,
    split: str = "test",
    num_topics: int = 667,
    num_train_queries: int = 600,
    num_test_queries: int = 200,
    seed: int = 0,
) -> BeirCollection:
    """Generate the synthetic collection and return one split of it.

    Args:
      out_dir: if given, also write all splits there in BEIR layout
        (:func:`write_collection`).
      split: ``"train"`` or ``"test"``: which queries and qrels to return (the corpus
        is the same for both).
      num_topics: number of entities; the corpus has ``3 * num_topics`` documents.
        At most 960 (240 names in each of 4 domains).
      num_train_queries, num_test_queries: split sizes (their sum is at most the number
        of documents).
      seed: everything is a deterministic function of the arguments.

    Returns a :class:`~jaxir.data.records.BeirCollection`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    corpus, queries, qrels = _generate(num_topics, num_train_queries, num_test_queries, seed)
    if out_dir is not None:
        _write(out_dir, corpus, queries, qrels)
    split_qrels = qrels[split]
    return BeirCollection(
        corpus={d.id: d for d in corpus},
        queries={q.id: q for q in queries if q.id in split_qrels},
        qrels=split_qrels,
    )
