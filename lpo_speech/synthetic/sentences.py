"""Deterministic everyday-English sentences for synthetic ASR data.

Why a grammar instead of a corpus: nothing may be downloaded, the same seed must give the same
data on every machine, and the words are chosen so WER measures recognition, not spelling
conventions: no digits, no hyphens, no contractions, no US/UK variants, no homophone-prone names.
Sentences are 5-14 words with one final punctuation mark; the space of sentences is in the
millions, so thousands of distinct ones come out quickly.
"""

from __future__ import annotations

import random

MIN_WORDS, MAX_WORDS = 5, 14

PEOPLE = """my brother|my sister|my mother|my father|our neighbor|the teacher|the doctor|the driver
|the old man|the young woman|a little boy|a tall girl|her friend|his cousin|the manager|the farmer
|the baker|the nurse|David|Peter|Emma|James|Lucy|Robert|Daniel|Paul|Linda|Thomas""".replace("\n", "").split("|")

ADJ = """red|blue|green|yellow|black|white|small|large|heavy|light|new|old|cheap|warm|cold|clean
|dirty|quiet|noisy|bright|dark|soft|hard|fresh|empty|broken|wooden|round|long|short|strange
|beautiful|simple|expensive|useful|famous|tiny|huge|friendly|careful""".replace("\n", "").split("|")

THINGS = """bicycle|umbrella|letter|basket|chair|table|window|blanket|bottle|camera|ticket|jacket
|bag|book|box|cup|key|lamp|map|phone|picture|plate|radio|ring|rope|shirt|shoe|spoon|towel|watch
|apple|orange|sandwich|cake|bread|coffee|newspaper|guitar|pencil|mirror|kettle|carpet|suitcase
|hat|glove|wallet|candle|bucket|ladder|painting""".replace("\n", "").split("|")

PLACES = """the kitchen|the garden|the station|the market|the library|the office|the park
|the beach|the hospital|the museum|the bakery|the village|the river|the church|the school
|the airport|the harbor|the hotel|the garage|the restaurant|the bank|the farm|the forest
|the bridge|the corner shop|the city center|the bus stop|the train""".replace("\n", "").split("|")

PREPS = ["at", "near", "behind", "outside", "inside", "next to", "across from"]

# (base form, past tense) of transitive verbs that take a thing.
VERBS_T = [tuple(v.split(",")) for v in """buy,bought|find,found|carry,carried|clean,cleaned
|paint,painted|sell,sold|bring,brought|fix,fixed|lose,lost|open,opened|wash,washed|move,moved
|borrow,borrowed|drop,dropped|hide,hid|need,needed|want,wanted|order,ordered|check,checked
|return,returned|keep,kept|leave,left|send,sent|take,took|hold,held|choose,chose|show,showed
|break,broke|make,made|describe,described""".replace("\n", "").split("|")]

# (base, past, third person) of intransitive movement/activity verbs.
VERBS_I = [tuple(v.split(",")) for v in """walk,walked,walks|wait,waited,waits|sleep,slept,sleeps
|sing,sang,sings|work,worked,works|read,read,reads|run,ran,runs|sit,sat,sits|stay,stayed,stays
|rest,rested,rests|study,studied,studies|dance,danced,dances|cook,cooked,cooks|swim,swam,swims
|play,played,plays|talk,talked,talks|shop,shopped,shops|travel,traveled,travels""".replace("\n", "").split("|")]

TIME_PAST = """yesterday|last night|this morning|last week|on Monday|on Friday|after lunch
|before dinner|last summer|in the evening|a long time ago|earlier today""".replace("\n", "").split("|")
TIME_FUTURE = """tomorrow|next week|on Sunday|after work|tonight|next summer|in the morning
|later today|before the weekend|after the meeting""".replace("\n", "").split("|")
TIME_HABIT = """every morning|every evening|on weekends|twice a week|after school|in the winter
|when it rains|most days|on Saturday afternoons|during the holidays""".replace("\n", "").split("|")
STATES = """tired|hungry|late|busy|happy|sick|angry|worried|bored|excited|cold|lost|nervous
|sleepy|ready""".replace("\n", "").split("|")
ADVERBS = ["very", "quite", "rather", "really", "surprisingly", "a little", "much too"]
EVENTS = """the guests arrive|the rain starts|the shop closes|it gets dark|the train leaves
|the children wake up|the lesson begins|the party ends|we go home|the sun sets""".replace("\n", "").split("|")


def _article(word: str) -> str:
    # 'useful' starts with a consonant sound; no other word in the lists needs an exception.
    return "an" if word[0] in "aeiou" and not word.startswith("use") else "a"


def _thing(rng: random.Random) -> str:
    """A noun phrase such as 'the broken lamp' or 'an orange umbrella'."""
    noun = rng.choice(THINGS)
    det = rng.choice(["a", "the", "my", "her", "his", "our", "their", "this", "that"])
    words = [rng.choice(ADJ)] if rng.random() < 0.6 else []
    words.append(noun)
    if det == "a":
        det = _article(words[0])
    return " ".join([det, *words])


def _place(rng: random.Random) -> str:
    return f"{rng.choice(PREPS)} {rng.choice(PLACES)}"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# The sentence templates; each draws its own words from `rng` in its own order (kept as written: the
# generated sentences, and so every world and held-out set, depend on that order).
TEMPLATES = (
    lambda rng, who, other, vt, vi: f"{_cap(who)} {vt[1]} {_thing(rng)} {_place(rng)} {rng.choice(TIME_PAST)}.",
    lambda rng, who, other, vt, vi: f"{_cap(who)} will {vt[0]} {_thing(rng)} {rng.choice(TIME_FUTURE)}.",
    lambda rng, who, other, vt, vi: f"Could you please {vt[0]} {_thing(rng)} {_place(rng)}?",
    lambda rng, who, other, vt, vi: f"{_cap(who)} {vi[1]} {_place(rng)} because {other} was {rng.choice(STATES)}.",
    lambda rng, who, other, vt, vi: f"The {rng.choice(THINGS)} {_place(rng)} is {rng.choice(ADVERBS)} {rng.choice(ADJ)}.",
    lambda rng, who, other, vt, vi: f"We should {vt[0]} {_thing(rng)} before {rng.choice(EVENTS)}.",
    lambda rng, who, other, vt, vi: f"{_cap(who)} {vi[2]} {_place(rng)} {rng.choice(TIME_HABIT)}.",
    lambda rng, who, other, vt, vi: f"Did {who} {vt[0]} {_thing(rng)} {rng.choice(TIME_PAST)}?",
    lambda rng, who, other, vt, vi: f"{_cap(rng.choice(TIME_PAST))}, {who} {vi[1]} {_place(rng)} with {other}.",
    lambda rng, who, other, vt, vi: f"I think {who} {vt[1]} {_thing(rng)} and {rng.choice(VERBS_T)[1]} {_thing(rng)}.",
    lambda rng, who, other, vt, vi: f"Please do not {vt[0]} {_thing(rng)} until {rng.choice(EVENTS)}.",
    lambda rng, who, other, vt, vi: f"{_cap(who)} was too {rng.choice(STATES)} to {vi[0]} {rng.choice(TIME_PAST)}.",
)


def _sentence(rng: random.Random) -> str:
    """One sentence from a randomly chosen template (may fall outside the word-count range)."""
    who = rng.choice(PEOPLE)
    other = rng.choice([p for p in PEOPLE if p != who])
    vt, vi = rng.choice(VERBS_T), rng.choice(VERBS_I)
    t = rng.randrange(len(TEMPLATES))
    return TEMPLATES[t](rng, who, other, vt, vi)


def generate(n: int, seed: int = 0) -> list[str]:
    """`n` distinct sentences, the same list for the same (n, seed) on every machine."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise RuntimeError(f"could only make {len(out)} distinct sentences out of {n} asked")
        s = _sentence(rng)
        if MIN_WORDS <= len(s.split()) <= MAX_WORDS and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def make_splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Train and held-out sentences that share no sentence (so test WER is not memorization)."""
    sents = generate(n_train + n_test, seed)
    train, test = sents[:n_train], sents[n_train:]
    assert not set(train) & set(test), "train and test overlap"
    return train, test
