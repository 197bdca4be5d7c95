"""CHAIR object-hallucination metrics (Rohrbach et al. 2018, "Object Hallucination in Image
Captioning", EMNLP).

For captions of images with known ground-truth objects::

    CHAIRs = captions with >= 1 hallucinated object / captions
    CHAIRi = hallucinated object mentions / object mentions
    recall = ground-truth objects mentioned / ground-truth objects (summed over captions)
    mean_length = mean number of whitespace-separated words per caption

An object mention is a vocabulary word or phrase (a class name or one of its synonyms) found
in the caption; it is hallucinated when its class is not among the image's ground-truth
objects. Like the original ``chair.py`` (and its widely used ports), CHAIRi counts EVERY
mention, so "a dog next to a dog" is two mentions; ``unique_mentions=True`` counts each
class once per caption instead. All ratios with a zero denominator are 0.0 (e.g. CHAIRi of
captions that mention no object); the denominators are returned alongside so a caller can
tell. Metrics are fractions in ``[0, 1]`` (papers print percentages).

Matching: the caption is lowercased and split into alphanumeric tokens; each token is
singularised; then, left to right, the LONGEST vocabulary phrase starting at each token is
taken (so "toilet seat" -> toilet and "hot dog" -> hot dog win over "seat"/"dog"). Phrases
can also be mapped to ``None`` to be ignored (e.g. "ski slope" is no mention of skis). The
vocabulary's synonyms are singularised with the same function, so both sides agree.

Singularisation: by default the rule-based :func:`singularise` (deterministic, no data
files). The original CHAIR used ``pattern.en.singularize`` and later ports NLTK's WordNet
lemmatiser; :func:`wordnet_singulariser` returns the latter when ``nltk`` and its WordNet data
are installed (they cannot be downloaded on lookright's machines). Differences: WordNet only
changes words it knows as nouns and leaves e.g. "people" and "men" unchanged, while the rules
here map them to "person"/"man"; both handle regular plurals (boxes, buses, stars, mice).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SHAPES_VOCABULARY",
    "CaptionChair",
    "ChairVocabulary",
    "Mention",
    "chair_caption",
    "chair_metrics",
    "coco_vocabulary",
    "extract_mentions",
    "extract_objects",
    "get_singulariser",
    "singularise",
    "wordnet_singulariser",
]

Singulariser = Callable[[str], str]

# ---------------------------------------------------------------------------------------------
# Rule-based singulariser
# ---------------------------------------------------------------------------------------------

_IRREGULAR: dict[str, str] = {
    "people": "person",
    "persons": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "teeth": "tooth",
    "feet": "foot",
    "oxen": "ox",
    "cacti": "cactus",
    "fungi": "fungus",
    "octopi": "octopus",
    "buses": "bus",
    "busses": "bus",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "leaves": "leaf",
    "loaves": "loaf",
    "shelves": "shelf",
    "halves": "half",
    "wolves": "wolf",
    "calves": "calf",
    "scarves": "scarf",
    "thieves": "thief",
    "elves": "elf",
    "tomatoes": "tomato",
    "potatoes": "potato",
    "heroes": "hero",
    "mangoes": "mango",
    "volcanoes": "volcano",
    "echoes": "echo",
    "mosquitoes": "mosquito",
    "skis": "ski",
    "taxis": "taxi",
    "kiwis": "kiwi",
    "bikinis": "bikini",
    "martinis": "martini",
    "zucchinis": "zucchini",
    "dice": "die",
}
# Words that end in "s" (or look plural) but are singular or invariant.
_INVARIANT = frozenset(
    """
    sheep deer fish moose bison salmon aircraft series species news scissors pants trousers
    jeans shorts clothes tennis chess always perhaps across towards afterwards whereas lens
    canvas atlas christmas pajamas pyjamas physics gymnastics athletics mathematics electronics
    politics its has was his this yes is as us bus gas
    """.split()
)
# -ie nouns whose plural "-ies" must not become "-y".
_IE_NOUNS = frozenset(
    """
    cookie movie brownie smoothie selfie zombie hoodie goalie veggie rookie calorie birdie
    beanie necktie bowtie pixie prairie genie collie sortie lassie hippie yuppie aussie boogie
    cutie sweetie auntie bootie talkie walkie pie tie lie die
    """.split()
)
# -ch/-sh words whose plural only adds "s" ("aches" -> "ache").
_CHE_NOUNS = frozenset(
    {"ache", "headache", "toothache", "mustache", "moustache", "niche", "quiche", "cliche"}
)
_MEN_EXCEPTIONS = frozenset(
    {"amen", "omen", "semen", "specimen", "abdomen", "stamen", "regimen", "hymen"}
)


def singularise(word: str) -> str:
    """Rule-based English singular of a lowercase word (lookright's default for CHAIR).

    Irregular plurals from a fixed list (people -> person, men -> man, mice -> mouse,
    children -> child, buses -> bus, knives -> knife, skis -> ski ...), invariant words
    (sheep, scissors, tennis, bus, glass-like "-ss" words, "-us" and "-is" words, words of
    3 letters or fewer), then suffix rules: ``-men -> -man``, ``-ies -> -y`` (except -ie nouns:
    cookies, ties), ``-sses -> -ss``, ``-xes/-zzes/-ches/-shes -> drop "es"``, ``-s -> drop``.
    """
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 3 or w in _INVARIANT:
        return w
    if w.endswith("men") and w not in _MEN_EXCEPTIONS:
        return w[:-3] + "man"
    if not w.endswith("s") or w.endswith(("ss", "us", "is")):
        return w
    if w.endswith("ies"):
        if w[:-1] in _IE_NOUNS or len(w) <= 4:
            return w[:-1]
        return w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith(("xes", "zzes")):
        return w[:-2]
    if w.endswith(("ches", "shes")):
        return w[:-1] if w[:-1] in _CHE_NOUNS else w[:-2]
    return w[:-1]


def wordnet_singulariser() -> Singulariser | None:
    """NLTK WordNet noun lemmatiser, or ``None`` when nltk or its WordNet data is missing."""
    try:
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer

        wordnet.ensure_loaded()
        lemmatizer = WordNetLemmatizer()
        lemmatizer.lemmatize("dogs", "n")
    except Exception:  # ImportError, LookupError (data not downloaded), ...
        return None

    def lemmatise(word: str) -> str:
        return lemmatizer.lemmatize(word.lower(), "n")

    return lemmatise


def get_singulariser(kind: str = "rule") -> Singulariser:
    """``"rule"`` (default): :func:`singularise`; ``"wordnet"``: NLTK WordNet (error if
    unavailable); ``"auto"``: WordNet when available, else the rules."""
    if kind == "rule":
        return singularise
    if kind in ("wordnet", "auto"):
        lemmatiser = wordnet_singulariser()
        if lemmatiser is not None:
            return lemmatiser
        if kind == "wordnet":
            raise RuntimeError("nltk with WordNet data is not available")
        return singularise
    raise ValueError(f"unknown singulariser {kind!r} (expected 'rule', 'wordnet' or 'auto')")


# ---------------------------------------------------------------------------------------------
# Vocabulary and matching
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Mention:
    """One object mention: the matched (singularised) phrase and its class."""

    phrase: str
    cls: str
    position: int


@dataclass(frozen=True, eq=False)
class ChairVocabulary:
    """Object classes, their synonyms, and matching rules.

    Build it with :meth:`from_synonyms`. ``phrases`` maps a singularised token tuple to a
    class name, or to ``None`` for a phrase that must be ignored (matched, then dropped).
    ``suppress`` holds ``(phrase, cls)`` pairs: mentions matched by ``phrase`` are dropped
    when class ``cls`` is also mentioned in the caption (CHAIR's "toilet ... seat" rule).
    """

    classes: tuple[str, ...]
    phrases: Mapping[tuple[str, ...], str | None]
    singulariser: Singulariser = singularise
    suppress: tuple[tuple[str, str], ...] = ()

    @property
    def max_phrase_length(self) -> int:
        return max((len(p) for p in self.phrases), default=0)

    @classmethod
    def from_synonyms(
        cls,
        synonyms: Mapping[str, Sequence[str]],
        ignore: Sequence[str] = (),
        suppress: Sequence[tuple[str, str]] = (),
        singulariser: Singulariser | None = None,
    ) -> ChairVocabulary:
        """Vocabulary from ``{class: [synonym, ...]}`` (the class name is a synonym itself).

        Raises ``ValueError`` when one phrase (after singularisation) would map to two
        different classes.
        """
        sing = singulariser or singularise
        phrases: dict[tuple[str, ...], str | None] = {}

        def add(phrase: str, target: str | None) -> None:
            key = tuple(sing(t) for t in _tokens(phrase))
            if not key:
                raise ValueError(f"empty phrase for class {target!r}")
            if key in phrases and phrases[key] != target:
                raise ValueError(
                    f"phrase {' '.join(key)!r} maps to both {phrases[key]!r} and {target!r}"
                )
            phrases[key] = target

        for name, words in synonyms.items():
            add(name, name)
            for word in words:
                add(word, name)
        for phrase in ignore:
            add(phrase, None)
        norm_suppress = tuple((" ".join(sing(t) for t in _tokens(p)), c) for p, c in suppress)
        return cls(tuple(synonyms), phrases, sing, norm_suppress)

    def canonical(self, name: str) -> str:
        """The class of a name or synonym (exact phrase match), else ``name`` unchanged."""
        key = tuple(self.singulariser(t) for t in _tokens(name))
        target = self.phrases.get(key)
        return target if target is not None else name


def extract_mentions(caption: str, vocab: ChairVocabulary) -> list[Mention]:
    """All object mentions of a caption, in order, duplicates included (longest match)."""
    tokens = [vocab.singulariser(t) for t in _tokens(caption)]
    longest = vocab.max_phrase_length
    mentions: list[Mention] = []
    i = 0
    while i < len(tokens):
        for length in range(min(longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i : i + length])
            if key in vocab.phrases:
                target = vocab.phrases[key]
                if target is not None:
                    mentions.append(Mention(" ".join(key), target, i))
                i += length
                break
        else:
            i += 1
    if vocab.suppress:
        present = {m.cls for m in mentions}
        drop = {phrase for phrase, c in vocab.suppress if c in present}
        mentions = [m for m in mentions if m.phrase not in drop]
    return mentions


def extract_objects(caption: str, vocab: ChairVocabulary) -> list[str]:
    """Classes mentioned in a caption, each once, in order of first mention."""
    return list(dict.fromkeys(m.cls for m in extract_mentions(caption, vocab)))


@dataclass(frozen=True)
class CaptionChair:
    """CHAIR bookkeeping of one caption.

    ``mentions``: class of every mention (duplicates included); ``hallucinated_mentions``:
    those not in the ground truth; ``objects`` / ``hallucinated``: the same, unique, in order;
    ``covered``: ground-truth classes mentioned; ``n_gt``: number of distinct ground-truth
    classes; ``n_words``: whitespace-separated words.
    """

    mentions: tuple[str, ...]
    hallucinated_mentions: tuple[str, ...]
    objects: tuple[str, ...]
    hallucinated: tuple[str, ...]
    covered: tuple[str, ...]
    n_gt: int
    n_words: int


def chair_caption(caption: str, gt_objects: Sequence[str], vocab: ChairVocabulary) -> CaptionChair:
    """Mentions and hallucinations of one caption (ground truth mapped via ``canonical``)."""
    gt = {vocab.canonical(o) for o in gt_objects}
    mentions = tuple(m.cls for m in extract_mentions(caption, vocab))
    objects = tuple(dict.fromkeys(mentions))
    return CaptionChair(
        mentions=mentions,
        hallucinated_mentions=tuple(c for c in mentions if c not in gt),
        objects=objects,
        hallucinated=tuple(c for c in objects if c not in gt),
        covered=tuple(c for c in objects if c in gt),
        n_gt=len(gt),
        n_words=len(caption.split()),
    )


def chair_metrics(
    captions: Sequence[str],
    gt_objects: Sequence[Sequence[str]],
    vocab: ChairVocabulary,
    unique_mentions: bool = False,
) -> dict[str, Any]:
    """CHAIRs, CHAIRi, recall and mean length of a set of captions.

    Args:
        captions: generated captions.
        gt_objects: per caption, the image's ground-truth object classes (names or synonyms).
        vocab: the object vocabulary (:data:`SHAPES_VOCABULARY`, :func:`coco_vocabulary`).
        unique_mentions: count each class once per caption in CHAIRi (default: every mention,
            as the original CHAIR).

    Returns:
        ``chair_s, chair_i, recall, mean_length`` and the counts ``n_captions,
        n_hallucinated_captions, n_mentions, n_hallucinated_mentions, n_gt_objects,
        n_covered``. Zero denominators give 0.0.
    """
    if len(captions) != len(gt_objects):
        raise ValueError(f"{len(captions)} captions but {len(gt_objects)} ground-truth lists")
    n_caps = n_hall_caps = n_ment = n_hall_ment = n_gt = n_cov = n_words = 0
    for caption, gt in zip(captions, gt_objects, strict=True):
        result = chair_caption(caption, gt, vocab)
        n_caps += 1
        n_hall_caps += bool(result.hallucinated)
        if unique_mentions:
            n_ment += len(result.objects)
            n_hall_ment += len(result.hallucinated)
        else:
            n_ment += len(result.mentions)
            n_hall_ment += len(result.hallucinated_mentions)
        n_gt += result.n_gt
        n_cov += len(result.covered)
        n_words += result.n_words

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    return {
        "chair_s": ratio(n_hall_caps, n_caps),
        "chair_i": ratio(n_hall_ment, n_ment),
        "recall": ratio(n_cov, n_gt),
        "mean_length": ratio(n_words, n_caps),
        "n_captions": n_caps,
        "n_hallucinated_captions": n_hall_caps,
        "n_mentions": n_ment,
        "n_hallucinated_mentions": n_hall_ment,
        "n_gt_objects": n_gt,
        "n_covered": n_cov,
    }


# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------

SHAPES_VOCABULARY: ChairVocabulary = ChairVocabulary.from_synonyms(
    {
        "circle": ["disc", "disk"],
        "square": [],
        "triangle": [],
        "star": [],
        "diamond": ["rhombus", "lozenge"],
        "cross": ["plus sign"],
        "rectangle": [],
        "hexagon": [],
        "pentagon": [],
        "octagon": [],
        "ellipse": ["oval"],
        "heart": [],
    }
)
"""CHAIR vocabulary of lookright's synthetic shapes data (``lookright.data.shapes``): its six
shapes plus common other shapes a model may hallucinate. Plurals ("circles", "boxes") are
handled by the singulariser."""

# One line per class: "class: synonym, synonym, ...". A class may span several lines (merged).
_COCO_SYNONYMS_TEXT = """
person: people, human, individual, man, woman, men, women, boy, girl, kid, child, children
person: baby, toddler, infant, teen, teenager, adult, lady, gentleman, guy, male, female
person: player, athlete, rider, skier, snowboarder, surfer, skateboarder, skater, biker
person: cyclist, bicyclist, motorcyclist, pedestrian, passenger, driver, worker, chef, cook
person: baker, waiter, waitress, officer, policeman, policewoman, cop, soldier, doctor, nurse
person: farmer, cowboy, bride, groom, mother, father, mom, dad, son, daughter, brother, sister
person: grandmother, grandfather, husband, wife, friend, student, teacher, tourist, traveler
person: traveller, spectator, catcher, pitcher, batter, umpire, goalie, jockey, vendor
person: customer, shopper, businessman, businesswoman, fireman, firefighter
bicycle: bike
car: automobile, sedan, suv, minivan, van, cab, taxi, jeep, limousine, limo, coupe, hatchback
car: police car, race car, sports car
motorcycle: motorbike, motor bike, motor cycle, scooter, moped, dirt bike
airplane: aeroplane, plane, air plane, jet, aircraft, airliner, jetliner, passenger jet
airplane: passenger plane
bus: school bus, double decker, minibus, trolley
train: locomotive, tram, streetcar, passenger train, freight train
truck: pickup, pickup truck, lorry, fire truck, firetruck, semi truck, dump truck, tow truck
boat: ship, yacht, sailboat, canoe, kayak, ferry, vessel, raft, rowboat, row boat, speedboat
boat: motorboat, motor boat, barge, tugboat, gondola, catamaran, dinghy
traffic light: traffic signal, stop light, stoplight, street light
fire hydrant: hydrant
stop sign:
parking meter:
bench: park bench
bird: pigeon, seagull, gull, duck, goose, swan, parrot, eagle, hawk, owl, crow, sparrow
bird: pelican, hen, rooster, flamingo, penguin, ostrich, dove
cat: kitten, kitty, house cat
dog: puppy, pup, doggy, terrier, poodle, labrador, retriever, bulldog, husky, chihuahua
dog: dachshund, beagle, collie, pug
horse: pony, foal, stallion, mare, colt
sheep: lamb, ram, ewe
cow: cattle, bull, calf, ox, heifer
elephant:
bear: polar bear, grizzly
zebra:
giraffe:
backpack: knapsack, rucksack, back pack
umbrella: parasol
handbag: purse, hand bag
tie: necktie, bow tie, bowtie
suitcase: suit case, luggage
frisbee: flying disc
skis: ski
snowboard:
sports ball: ball, tennis ball, soccer ball, beach ball, golf ball, volleyball, basketball
sports ball: football
kite:
baseball bat: bat
baseball glove: glove, mitt, baseball mitt
skateboard: skate board
surfboard: surf board
tennis racket: racket, racquet, tennis racquet
bottle:
wine glass: wineglass
cup: mug, coffee cup, teacup, tea cup
fork:
knife:
spoon:
bowl:
banana:
apple:
sandwich: burger, hamburger, cheeseburger, panini
orange:
broccoli:
carrot:
hot dog: hotdog, frankfurter
pizza:
donut: doughnut
cake: cupcake, cheesecake
chair: seat, stool, armchair, high chair, recliner
couch: sofa, loveseat, love seat, futon
potted plant: plant, house plant, houseplant, flower pot, flowerpot
bed: bunk bed, crib
dining table: table, kitchen table, dinner table, picnic table, coffee table, desk
toilet: toilet seat, urinal, commode
tv: television, tv set, television set, monitor
laptop: laptop computer, computer, notebook computer
mouse: computer mouse
remote: remote control, controller, wii remote
keyboard:
cell phone: cellphone, phone, mobile phone, smartphone, smart phone, iphone, telephone
microwave: microwave oven
oven: stove, stovetop, stove top
toaster: toaster oven
sink:
refrigerator: fridge, freezer
book: novel, textbook
clock:
vase:
scissors: scissor
teddy bear: teddy, stuffed animal, stuffed bear
hair drier: hair dryer, hairdryer, blow dryer, blowdryer
toothbrush: tooth brush
"""


def _parse_synonyms(text: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in text.strip().splitlines():
        name, _, rest = line.partition(":")
        words = [w.strip() for w in rest.split(",") if w.strip()]
        table.setdefault(name.strip(), []).extend(words)
    return table


_COCO_SYNONYMS: dict[str, list[str]] = _parse_synonyms(_COCO_SYNONYMS_TEXT)

# "baby elephant" / "adult zebra" is the animal, not a person; "passenger train" is a train.
_QUALIFIED_ANIMALS = tuple(
    "bird cat dog horse sheep cow elephant bear zebra giraffe kitten puppy lamb calf".split()
)
_COCO_IGNORE = (
    "baby animal",
    "adult animal",
    "ski slope",
    "ski lift",
    "ski resort",
    "ski pole",
    "ski trail",
)
_COCO_SUPPRESS = (("seat", "toilet"),)


def coco_vocabulary(singulariser: Singulariser | None = None) -> ChairVocabulary:
    """CHAIR vocabulary of the 80 MS-COCO object classes (class names = COCO category names).

    The synonym list is lookright's own, modelled on the standard CHAIR ``synonyms.txt`` (not
    a copy of it; not exhaustive): people words map to ``person``, "bike" to ``bicycle``,
    "plane"/"jet" to ``airplane``, "sofa" to ``couch``, "table" to ``dining table`` ... It
    keeps the original's special cases: two-word objects ("hot dog", "teddy bear",
    "toilet seat" -> toilet, "bow tie" -> tie), "baby"/"adult" + animal is the animal and
    "passenger" + jet/train the vehicle (not a person), and "seat" does not count as a chair
    when a toilet is mentioned.
    """
    synonyms = {k: list(v) for k, v in _COCO_SYNONYMS.items()}
    for animal in _QUALIFIED_ANIMALS:
        target = next(c for c, words in _COCO_SYNONYMS.items() if c == animal or animal in words)
        synonyms[target] += [f"baby {animal}", f"adult {animal}"]
    return ChairVocabulary.from_synonyms(
        synonyms, ignore=_COCO_IGNORE, suppress=_COCO_SUPPRESS, singulariser=singulariser
    )
