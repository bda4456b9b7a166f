"""A small English sentence generator (TIMIT-like SX/SI prompts)."""

from __future__ import annotations

import re

_NOUNS = """
apple arm artist baby badge bag ball balloon banana bank barn basket bath beach bean
bear bed bell belt bench berry bicycle bird blanket boat book boot bottle boy branch
bread bridge brother brush bubble bucket butter button cabin cake camel candle canoe
captain car carpet castle cat chair cheese cherry chicken child chimney church circle
city cloud clown coat coin collar cook cottage cow crayon crown cup curtain daughter
desk diamond dinner doctor dog doll dolphin donkey door dragon drawer dream dress drum
duck eagle engine envelope farmer feather fence finger fire fish flag flower forest
fox frog garage garden ghost giraffe girl glove goat guitar hammer hat hedge helmet
hill horse house island jacket jar jelly jewel journey judge kettle key king kitchen
kite knife ladder lamp lemon letter library lion lizard machine map measure meadow
melon mirror monkey moon mother mountain mouse mushroom needle nest newspaper noise
nurse ocean office onion orange owl oyster painter palace pencil penguin pepper piano
picture pillow pilot pirate pitcher planet plate pocket pony potato puppy puzzle queen
rabbit rainbow river robot rocket ruler sailor salad sandwich scarf school shadow sheep
shell ship shoe shovel singer sister soldier spider spoon squirrel station statue stone
student sugar suitcase sweater table teacher tiger toaster tomato tower toy tractor
treasure tree truck tunnel turtle umbrella uncle valley vase village violin voice wagon
wallet watch whale window wizard wolf worker yacht zebra
""".split()

_PLURALS = {
    "child": "children",
    "mouse": "mice",
    "sheep": "sheep",
    "fish": "fish",
    "knife": "knives",
    "wolf": "wolves",
    "scarf": "scarves",
    "potato": "potatoes",
    "tomato": "tomatoes",
}

# base, third person singular, past
_VERBS = (
    ("bake", "bakes", "baked"),
    ("borrow", "borrows", "borrowed"),
    ("bring", "brings", "brought"),
    ("build", "builds", "built"),
    ("buy", "buys", "bought"),
    ("carry", "carries", "carried"),
    ("catch", "catches", "caught"),
    ("change", "changes", "changed"),
    ("chase", "chases", "chased"),
    ("clean", "cleans", "cleaned"),
    ("cover", "covers", "covered"),
    ("draw", "draws", "drew"),
    ("drop", "drops", "dropped"),
    ("enjoy", "enjoys", "enjoyed"),
    ("fetch", "fetches", "fetched"),
    ("find", "finds", "found"),
    ("fix", "fixes", "fixed"),
    ("follow", "follows", "followed"),
    ("forget", "forgets", "forgot"),
    ("gather", "gathers", "gathered"),
    ("grab", "grabs", "grabbed"),
    ("guard", "guards", "guarded"),
    ("hide", "hides", "hid"),
    ("hold", "holds", "held"),
    ("hug", "hugs", "hugged"),
    ("judge", "judges", "judged"),
    ("keep", "keeps", "kept"),
    ("kick", "kicks", "kicked"),
    ("lift", "lifts", "lifted"),
    ("like", "likes", "liked"),
    ("lose", "loses", "lost"),
    ("measure", "measures", "measured"),
    ("mend", "mends", "mended"),
    ("move", "moves", "moved"),
    ("notice", "notices", "noticed"),
    ("open", "opens", "opened"),
    ("paint", "paints", "painted"),
    ("pass", "passes", "passed"),
    ("pick", "picks", "picked"),
    ("pull", "pulls", "pulled"),
    ("push", "pushes", "pushed"),
    ("reach", "reaches", "reached"),
    ("rescue", "rescues", "rescued"),
    ("ring", "rings", "rang"),
    ("sell", "sells", "sold"),
    ("send", "sends", "sent"),
    ("shake", "shakes", "shook"),
    ("share", "shares", "shared"),
    ("show", "shows", "showed"),
    ("sing", "sings", "sang"),
    ("squeeze", "squeezes", "squeezed"),
    ("steal", "steals", "stole"),
    ("take", "takes", "took"),
    ("taste", "tastes", "tasted"),
    ("teach", "teaches", "taught"),
    ("thank", "thanks", "thanked"),
    ("throw", "throws", "threw"),
    ("touch", "touches", "touched"),
    ("treasure", "treasures", "treasured"),
    ("visit", "visits", "visited"),
    ("wash", "washes", "washed"),
    ("watch", "watches", "watched"),
    ("weigh", "weighs", "weighed"),
    ("wrap", "wraps", "wrapped"),
    ("write", "writes", "wrote"),
    ("yell", "yells", "yelled"),
)

_ADJECTIVES = """
angry bitter black blue bold brave bright broken brown busy calm careful cheap
cheerful clever cold cozy crooked curious damp dark deep dirty dizzy dry dusty eager
early empty enormous fancy fast fat fierce foolish fresh friendly funny gentle giant
glad gloomy golden good gray greasy green grumpy happy heavy hollow huge hungry icy
jolly joyful large lazy little lonely loud lovely lucky muddy narrow nervous new
noisy odd oily old orange pale patient pink plain polite poor precious proud purple
quick quiet rapid rare red rich rough round royal rusty sad sandy shiny short shy
silly silver sleepy slow small smooth soft sour strange strong sturdy sunny sweet
tall thick thin tidy tiny tired ugly usual vast warm wet white wild wise wooden
yellow young
""".split()

_ADVERBS = """
quickly slowly quietly loudly gently carefully happily sadly bravely eagerly rarely
usually often proudly suddenly nearly easily calmly
""".split()

_DEGREES = "very quite rather too so".split()

_PLACES = """
garden kitchen forest harbor market station library village valley meadow garage
cellar attic museum bakery castle island orchard river beach desert jungle palace
stadium theater tunnel chapel barn bridge hallway
""".split()

_NAMES = """
Anna Ben Carla David Ella Frank George Helen Isaac Julia Kevin Laura Martin Nora Oscar
Paula Ruth Simon Thomas Vera Walter Zoe Joseph Charlotte Judy Roger Hugh Sheila Boyd
Ethan
""".split()

_NUMBERS = "two three four five six seven eight nine ten twelve".split()

# Slots: {A} article + next word, {adj} {noun} {nouns} {place} {name} {adv}
# {deg} {num} {base} {s3} {past}.
_TEMPLATES = (
    "The {adj} {noun} {past} {A}{noun}.",
    "{name} {past} {A}{adj} {noun} near the {place}.",
    "Why did the {noun} {base} the {adj} {noun}?",
    "When the {noun} {past}, the {adj} {noun} {past} {adv}.",
    "Please {base} the {noun} before {name} {s3} it.",
    "{name} and {name} {past} {num} {adj} {nouns}.",
    "Our {noun} was {deg} {adj}, but the {noun} {past} it anyway.",
    "{A}{adj} {noun} can {base} {num} {nouns}.",
    "Did {name} {base} the {noun} in the {place}?",
    "The {noun} in the {place} {past} {adv}.",
    "{name} {adv} {past} the {adj} {noun} and the {noun}.",
    "Nobody {past} the {noun} that {name} {past} yesterday.",
    "Those {adj} {nouns} were {deg} {adj} for the {noun}.",
    "If you {base} the {noun}, the {noun} will {base} {adv}.",
    "{name} thinks that {A}{noun} {s3} the {adj} {place}.",
    "Every morning the {noun} {s3} {A}{adj} {noun} to the {place}.",
    "Where did {name} {base} those {adj} {nouns}?",
    "My {noun} never {s3} {A}{noun} without {A}{adj} {noun}.",
)

_WORD_RE = re.compile(r"[A-Za-z']+")


def _plural(noun):
    if noun in _PLURALS:
        return _PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(word):
    w = word.lower()
    if w[0] in "aeiou" and not w.startswith(("use", "usu", "uni", "eu", "one")):
        return "an"
    return "a"


def sentence_words(text: str) -> list[str]:
    """The words of a sentence as TIMIT writes them in ``.WRD`` (lower case,
    punctuation but apostrophes removed)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


class SentenceGenerator:
    """Makes varied, grammatical-ish English sentences of 4-12 words.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of all choices.

    Example
    -------
    >>> gen = SentenceGenerator(np.random.default_rng(0))
    >>> 4 <= len(sentence_words(gen.sentence())) <= 12
    True
    """

    def __init__(self, rng):
        self.rng = rng

    def _pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def _fill(self, slot):
        verb = None
        if slot in ("base", "s3", "past"):
            verb = self._pick(_VERBS)
        return {
            "adj": lambda: self._pick(_ADJECTIVES),
            "noun": lambda: self._pick(_NOUNS),
            "nouns": lambda: _plural(self._pick(_NOUNS)),
            "place": lambda: self._pick(_PLACES),
            "name": lambda: self._pick(_NAMES),
            "adv": lambda: self._pick(_ADVERBS),
            "deg": lambda: self._pick(_DEGREES),
            "num": lambda: self._pick(_NUMBERS),
            "base": lambda: verb[0],
            "s3": lambda: verb[1],
            "past": lambda: verb[2],
        }[slot]()

    def sentence(self) -> str:
        """Returns one sentence, e.g. ``"The muddy goat kicked a lemon."``."""
        while True:
            template = self._pick(_TEMPLATES)
            parts = re.split(r"(\{[A-Za-z0-9]+\})", template)
            out = []
            pending_article = False
            for part in parts:
                if not (part.startswith("{") and part.endswith("}")):
                    out.append(part)
                    continue
                slot = part[1:-1]
                if slot == "A":
                    pending_article = True
                    continue
                word = self._fill(slot)
                if pending_article:
                    word = f"{_article(word)} {word}"
                    pending_article = False
                out.append(word)
            text = "".join(out)
            text = text[0].upper() + text[1:]
            if 4 <= len(sentence_words(text)) <= 12:
                return text
