"""A miniature of the paper's world: a seeded fictional world, its pre-training corpus, and
SuperGLUE-like tasks over it. Pure Python, deterministic, offline.

People live in towns, work at firms and keep pets; towns lie in regions on rivers and are
known for a dish; firms make a product. The corpus renders these facts as biographies,
news items, dialogues, reading exercises and lists. Tasks ask about the same facts; some
questions need facts that appear only in the corpus (closed-book), not in their passage.
"""

import dataclasses
import random
from typing import Iterator, Optional

_SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vu", "zor", "bel", "dan", "fi", "gor", "hal",
              "in", "jo", "kes", "lum", "mor", "nel", "ost", "pra", "quin", "sal", "tav",
              "ur", "vel", "wen", "yar", "zel", "bri", "cas"]
PROFESSIONS = ["baker", "pilot", "teacher", "farmer", "painter", "doctor", "sailor", "miner",
               "weaver", "singer", "judge", "potter"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
ANIMALS = ["cat", "dog", "goat", "parrot", "horse", "rabbit", "owl", "turtle"]
DISHES = ["fish soup", "plum cake", "goat cheese", "rye bread", "honey tea", "bean stew"]
PRODUCTS = ["boats", "lamps", "shoes", "clocks", "maps", "bells", "carpets", "kites"]
RIVERS = ["Amber", "Silver", "Cold", "Long", "Quiet", "Stone"]


@dataclasses.dataclass
class Person:
  name: str
  pronoun: str
  town: str
  job: str
  firm: str
  color: str
  pet: str
  pet_name: str
  born: int
  friend: str = ""


@dataclasses.dataclass
class Town:
  name: str
  region: str
  river: str
  dish: str


@dataclasses.dataclass
class Firm:
  name: str
  town: str
  product: str
  founded: int


class World:
  """All entities, generated from `seed`."""

  LABELS = ("entailment", "contradiction", "neutral")  # A claim's relation to a text.

  def __init__(self, seed: int = 0, num_people: int = 600, num_towns: int = 24,
               num_firms: int = 40):
    rng = random.Random(seed)
    used = set()

    def word(parts, unique=True):
      for _ in range(10000):
        name = "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()
        if not unique or name not in used:
          used.add(name)
          return name
      raise ValueError(f"World: ran out of unique {parts}-syllable names; use fewer entities.")

    first_names = [word(2) for _ in range(120)]

    regions = [word(3) for _ in range(4)]
    self.towns = [Town(word(2), rng.choice(regions), rng.choice(RIVERS), rng.choice(DISHES))
                  for _ in range(num_towns)]
    self.firms = [Firm(word(2) + rng.choice([" Works", " and Sons", " Guild"]),
                       rng.choice(self.towns).name, rng.choice(PRODUCTS),
                       rng.randrange(1800, 2000)) for _ in range(num_firms)]
    self.people = []
    for _ in range(num_people):
      firm = rng.choice(self.firms)
      self.people.append(Person(
          name=f"{rng.choice(first_names)} {word(3)}", pronoun=rng.choice(["he", "she"]),
          town=rng.choice(self.towns).name, job=rng.choice(PROFESSIONS), firm=firm.name,
          color=rng.choice(COLORS), pet=rng.choice(ANIMALS), pet_name=word(2, unique=False),
          born=rng.randrange(1940, 2005)))
    for person in self.people:
      person.friend = rng.choice(self.people).name
    self.town = {t.name: t for t in self.towns}
    self.firm = {f.name: f for f in self.firms}

  # --- The corpus --------------------------------------------------------------------

  def biography(self, p: Person, rng: random.Random) -> str:
    he, his = p.pronoun.capitalize(), {"he": "His", "she": "Her"}[p.pronoun]
    sentences = [
        rng.choice([f"{p.name} was born in {p.born} and lives in {p.town}.",
                    f"Born in {p.born}, {p.name} makes a home in {p.town}.",
                    f"{p.name} lives in {p.town}; {p.pronoun} was born in {p.born}."]),
        rng.choice([f"{he} works as a {p.job} at {p.firm}.",
                    f"By trade {p.name} is a {p.job}, employed by {p.firm}.",
                    f"{he} is a {p.job} for {p.firm}."]),
        rng.choice([f"{his} favourite colour is {p.color}.",
                    f"{p.name} likes the colour {p.color} best."]),
        rng.choice([f"{he} keeps a {p.pet} called {p.pet_name}.",
                    f"{p.pet_name}, a {p.pet}, lives with {p.name}."]),
        f"{his} best friend is {p.friend}.",
    ]
    rng.shuffle(sentences[2:])
    return " ".join(sentences)

  def town_note(self, t: Town, rng: random.Random) -> str:
    return rng.choice([
        f"{t.name} is a town in {t.region} on the {t.river} river, famous for its {t.dish}.",
        f"On the banks of the {t.river} lies {t.name}, a town of {t.region} known for "
        f"{t.dish}.",
    ])

  def news(self, f: Firm, rng: random.Random) -> str:
    staff = [p.name for p in self.people if p.firm == f.name][:3]
    lines = [rng.choice([f"NEWS: {f.name}, the maker of {f.product} founded in {f.founded}, "
                         f"reports a busy year in {f.town}.",
                         f"{f.town} daily: {f.name} ({f.product} since {f.founded}) is hiring."])]
    if staff:
      lines.append(f"Workers such as {', '.join(staff)} spoke to the paper.")
    return " ".join(lines)

  def dialogue(self, p: Person, rng: random.Random) -> str:
    return rng.choice([
        f"A: Where does {p.name} live? B: In {p.town}. A: And what does {p.pronoun} do? "
        f"B: {p.pronoun.capitalize()} is a {p.job}.",
        f"A: Who looks after {p.pet_name}? B: {p.name}, it is {p.name.split()[0]}'s {p.pet}.",
        self._yes_no(p, rng),
    ])

  def _yes_no(self, p: Person, rng: random.Random) -> str:
    """Yes/no questions answered: the corpus teaches the answer words (as web text would)."""
    town = rng.choice([p.town, rng.choice(self.towns).name])
    answer = "yes" if town == p.town else f"no, in {p.town}"
    return f"A: Does {p.name} live in {town}? B: {answer}."

  def exercise(self, p: Person, rng: random.Random) -> str:
    """A reading exercise, as web text has them: a biography, then a claim judged against
    it (entailment / contradiction / neutral), a question about it answered yes / no, or
    one answered by a span of it; or a dialogue, then the clause asked about in it, judged
    by what the answerer commits to. A frozen model can only be prompted to do what it
    learned to do in context: here, to say these answer words and to copy these spans."""
    kind = rng.randrange(4)
    cue = rng.choice(["Verdict:", "The text and the claim:", "Relation:"])
    if kind == 3:  # A dialogue: is B committed to the clause asked about?
      label = rng.randrange(3)
      dialogue, clause = self.commitment(p, label, rng)
      return f"{dialogue} Claim: {clause} {cue} {self.LABELS[label]}."
    bio = self.biography(p, rng)
    if kind == 2:  # Worded unlike the QA tasks' questions: a prompt must bridge the two.
      question, answer = rng.choice([
          (f"In which town does {p.name} live?", p.town), (f"Who employs {p.name}?", p.firm),
          (f"Who is {p.name}'s best friend?", p.friend),
          (f"What is {p.name}'s {p.pet} called?", p.pet_name)])
      return f"{bio} Q: {question} A: {answer}."
    fact, truth, wrong = rng.choice([
        ("lives in", p.town, [t.name for t in self.towns]),
        ("works at", p.firm, [f.name for f in self.firms]),
        ("is a", p.job, PROFESSIONS), ("keeps a", p.pet, ANIMALS)])
    value = truth if rng.random() < 0.5 else rng.choice([w for w in wrong if w != truth])
    if kind == 1:
      verb = {"lives in": "live in", "works at": "work at", "keeps a": "keep a"}.get(fact)
      question = f"does {p.name} {verb} {value}?" if verb else f"is {p.name} a {value}?"
      return f"{bio} Question: {question} Answer: {'yes' if value == truth else 'no'}."
    if rng.random() < 2 / 3:  # A third of the claims each: entailed, contradicted, neutral.
      claim = f"{p.name} {fact} {value}."
      label = "entailment" if value == truth else "contradiction"
    else:
      claim, label = rng.choice([
          f"{rng.choice(self.firms).name} makes {rng.choice(PRODUCTS)}.",
          f"{rng.choice(self.people).name} lives in {rng.choice(self.towns).name}."]), "neutral"
    return f"{bio} Claim: {claim} {cue} {label}."

  def commitment(self, p: Person, label: int, rng: random.Random) -> tuple[str, str]:
    """(dialogue, clause): A asks whether a clause about `p` holds; B commits to it (label
    0, entailment: it holds), denies it with a correction (1, contradiction: it does not)
    or does not commit (2, neutral: either) — CommitmentBank's question, in miniature."""
    kind = rng.choice(["town", "job", "pet"])
    truth, wrong = {"town": (p.town, [t.name for t in self.towns]),
                    "job": (p.job, PROFESSIONS), "pet": (p.pet, ANIMALS)}[kind]
    value = truth if label == 0 or (label == 2 and rng.random() < 0.5) else rng.choice(
        [w for w in wrong if w != truth])
    question, clause = {
        "town": (f"Does {p.name} live in {value}?", f"{p.name} lives in {value}."),
        "job": (f"Is {p.name} a {value}?", f"{p.name} is a {value}."),
        "pet": (f"Does {p.name} keep a {value}?", f"{p.name} keeps a {value}.")}[kind]
    does = "is" if kind == "job" else "does"
    answer = rng.choice([
        ["yes.", f"yes, {p.pronoun} {does}.", "I am sure of it."],
        [f"no, {'in ' if kind == 'town' else 'a '}{truth}.", f"no, {p.pronoun} {does} not.",
         "certainly not."],
        ["I do not know.", "I am not sure.", "who knows?"]][label])
    # Half the dialogues open on another subject (never the one asked about, which would
    # decide the clause before B speaks).
    opening = ""
    if rng.random() < 0.5:
      opening = (f"A: Who looks after {p.pet_name}? B: {p.name}. " if kind != "pet" else
                 f"A: Where does {p.name} work? B: At {p.firm}. ")
    return f"{opening}A: {question} B: {answer}", clause

  def listing(self, t: Town) -> str:
    residents = [p.name for p in self.people if p.town == t.name][:6]
    return f"People of {t.name}: {', '.join(residents)}." if residents else ""

  def corpus(self, seed: int = 0) -> Iterator[str]:
    """Endless documents (biographies, town notes, news, dialogues, reading exercises,
    lists)."""
    rng = random.Random(seed)
    while True:
      kind = rng.random()
      if kind < 0.33:
        yield self.biography(rng.choice(self.people), rng)
      elif kind < 0.46:
        yield self.town_note(rng.choice(self.towns), rng)
      elif kind < 0.58:
        yield self.news(rng.choice(self.firms), rng)
      elif kind < 0.69:
        yield self.dialogue(rng.choice(self.people), rng)
      elif kind < 0.96:
        yield self.exercise(rng.choice(self.people), rng)
      else:
        text = self.listing(rng.choice(self.towns))
        if text:
          yield text


def default_world() -> World:
  return World(seed=0)


def split_of(index: int) -> str:
  """People are split 80/10/10 into train / validation / test by index."""
  return "train" if index % 10 < 8 else ("validation" if index % 10 == 8 else "test")


def corpus_sample(world: Optional[World] = None, documents: int = 1000, seed: int = 0) -> list:
  it = (world or default_world()).corpus(seed)
  return [next(it) for _ in range(documents)]
