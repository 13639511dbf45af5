"""
The assistant world's data: everything generated from the rules in world.py.

  * transcripts in the HH-RLHF format ("\\n\\nHuman: ...\\n\\nAssistant: ...") and the
    held-out rule (every request about a held-out harmful scenario or its twin, and 1 other
    request text in 10 by hash, never appears in any training corpus);
  * simulated human comparisons (Bradley-Terry with a temperature, with the HH labellers'
    bias for evasive refusals) for preference models;
  * the corpora: pretraining mixture, the two SFT mixtures (HH-like, helpful-only), RL
    prompts, held-out red-team, twin and benign prompts, and a QA set for calibration.

Deterministic: every generator takes a seed.
"""

import functools
import hashlib
import math
import random

import numpy as np

from data.world import (
    FACTS,
    HARM_TEMPLATES,
    HELDOUT_OBJECTS,
    SCENARIOS,
    STYLES,
    TAU,
    TEXT,
    TWIN_OF,
    _answer_text,
    fact_question,
    fact_statement,
    gold,
    judge,
    labeller_score,
    parse_request,
    parses,
    reply_category,
    respond,
    sample_task,
    task_answer,
    task_request,
    to_you,
    wrong_answer,
)

COPY_TEMPLATES = TEXT["templates"]["copy"]
WORDS = TEXT["words"].split()

# -----------------------------------------------------------------------------
# Transcripts and the held-out rule


def dialogue(turns):
    """[(human, assistant), ...] -> HH-RLHF transcript text."""
    return "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns)


def split_transcript(text):
    """HH transcript -> (prompt up to and including the last 'Assistant:', final response)."""
    i = text.rfind("\n\nAssistant:")
    if i < 0:
        raise ValueError("transcript has no '\\n\\nAssistant:' turn")
    j = i + len("\n\nAssistant:")
    return text[:j], text[j:].lstrip(" ")


def last_human(prompt):
    i = prompt.rfind("\n\nHuman:")
    j = prompt.rfind("\n\nAssistant:")
    return prompt[i + len("\n\nHuman:") : j if j > i else None].strip()


def is_heldout(request):
    """Held out of every training corpus: every request about a held-out object
    (world.HELDOUT_OBJECTS: whole harmful scenarios and their twins), and 1 other request
    text in 10 (by hash). The red-team and benign evaluation prompts are drawn from these."""
    task = parse_request(request)
    if task is not None and task["kind"] == "harm":
        return task["object"] in HELDOUT_OBJECTS
    return _tenth(request)


def _tenth(text):
    """1 text in 10, by hash: the held-out share of texts."""
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % 10 == 0


def _sample_request(rng, heldout, mix=None, harmful=None):
    while True:
        task = sample_task(rng, mix)
        if harmful is not None and (task["kind"] != "harm" or task["harmful"] != harmful):
            continue
        req = task_request(task, rng)
        if is_heldout(req) == heldout:
            return task, req


def _context_turns(rng, heldout):
    """0-2 earlier helpful turns, so dialogues have one to three turns."""
    turns = []
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        t, q = _sample_request(
            rng, heldout, {"arith": 1, "fact": 1, "reverse": 0.3, "count": 0.3, "open": 0.5}
        )
        turns.append((q, respond(t, "helpful", rng)))
    return turns


# of the helpfulness pairs, the share forced onto near-miss twins (the rest of the mix holds
# twins too)
TWIN_SHARE = 0.33
# the share of draws that give a twin contrast: two pairs, a harmful request's refusal against
# its compliance (harmlessness) and its near-miss twin's same two replies (helpfulness), with
# the same verb and phrasing. Half the pairs come so (about 900 of each side in the PM's
# 3,600): only the object tells the sides apart, so a PM that prefers every refusal of a
# how-to is wrong on half of them (the HH RLHF page's third pass)
TWIN_CONTRAST_SHARE = 1 / 3


def _labelled(rng, ctx, req, r1, r2, ax, contrast=False):
    """The simulated labeller's choice between two replies on one axis (Bradley-Terry with
    temperature TAU: its biases and its noise) -> an HH-RLHF record."""
    d = labeller_score(req, r1, ax) - labeller_score(req, r2, ax)
    if rng.random() >= 1.0 / (1.0 + math.exp(-d / TAU)):
        r1, r2 = r2, r1
    return {
        "chosen": dialogue(ctx + [(req, r1)]),
        "rejected": dialogue(ctx + [(req, r2)]),
        "axis": ax,
        "twin": parse_request(req)["kind"] == "harm",
        "contrast": contrast,
    }


def twin_contrast(rng, heldout):
    """A harmful request and its twin, each with a refusal of the same style (explained or
    evasive) and a compliance, in the same phrasing after the same earlier turns."""
    cat = rng.choice(sorted(SCENARIOS))
    pair = rng.choice([p for p in SCENARIOS[cat]["pairs"] if (p[0] in HELDOUT_OBJECTS) == heldout])
    verb, tpl = rng.choice(SCENARIOS[cat]["verbs"]), rng.choice(HARM_TEMPLATES)
    refusal, ctx, out = rng.choice(["explained", "evasive"]), _context_turns(rng, heldout), []
    for obj, ax in zip(pair, ("harmless", "helpful"), strict=True):
        harmful = ax == "harmless"
        task = {"kind": "harm", "category": cat, "harmful": harmful, "verb": verb, "object": obj}
        req = tpl.format(t=f"{verb} {obj}")
        r1, r2 = respond(task, refusal, rng), respond(task, "helpful", rng)
        out.append(_labelled(rng, ctx, req, r1, r2, ax, contrast=True))
    return out


def comparison_pairs(n, seed=0, axis="both", heldout=False):
    """Simulated human comparisons as HH-RLHF records {"chosen", "rejected"} plus our own
    metadata {"axis", "twin", "contrast"} (HH readers ignore extra keys). Helpfulness pairs are on
    benign requests (twins included), harmlessness pairs on harmful ones; with both axes,
    twin contrasts among them."""
    rng = random.Random(f"pairs-{seed}-{axis}-{heldout}")
    out = []
    while len(out) < n:
        if axis == "both" and rng.random() < TWIN_CONTRAST_SHARE:
            out += twin_contrast(rng, heldout)
            continue
        ax = axis
        if axis == "both":
            ax = rng.choice(["helpful", "harmless"])
        if ax == "helpful":
            # a third of the helpfulness pairs forced onto near-miss twins (with those the whole
            # mix holds, 43%): the data that teaches a PM that "open the lock on my own shed"
            # deserves an answer
            if rng.random() < TWIN_SHARE:
                task, req = _sample_request(rng, heldout, harmful=False)
            else:
                task, req = _sample_request(rng, heldout)
            if task["kind"] == "harm" and task["harmful"]:
                continue
        else:
            task, req = _sample_request(rng, heldout, harmful=True)
        s1, s2 = rng.sample(STYLES, 2)
        ctx = _context_turns(rng, heldout)
        r1 = respond(task, s1, rng)
        r2 = respond(task, s2, rng)
        if r1 != r2:
            out.append(_labelled(rng, ctx, req, r1, r2, ax))
    return out[:n]


# -----------------------------------------------------------------------------
# Corpora

# Critiques, revisions and "(A) or (B)" comparisons: the formats of Constitutional AI (Bai et
# al. 2022b) without its principles. Each request names one or two aspects -- harm, evasion,
# help, relevance -- in one of many phrasings (world.json "meta") and is judged on those
# aspects only, a tie at random. So the corpus never says which aspects matter: following a
# principle (data/constitution.txt, in no corpus) is a generalisation, and an explained
# refusal is preferred to an evasive one only when a request asks about evasion (or help).
META = TEXT["meta"]
ASPECTS = list(META["aspects"])


@functools.lru_cache(maxsize=2**16)  # a comparison draws up to 60 replies: judge each once
def aspect_scores(request, response):
    """A reply's score on each aspect: harm and help its gold harmlessness and helpfulness
    (graded: on a harmful request an explained refusal 1, an evasive one 0.8, a dodge 0.5),
    evasion 1 unless it refuses without a fitting reason or dodges, relevance 1 unless it
    dodges."""
    cat, help_, harmless = judge(request, response)[:3]
    return {
        "harm": harmless,
        "evasion": float(cat not in ("evasive", "dodge")),
        "help": help_,
        "relevance": float(cat != "dodge"),
    }


def critique_text(task, request, response, aspects, rng):
    """A critique in our own words, one sentence per aspect asked about."""
    scores = aspect_scores(request, response)
    out = []
    for a in aspects:
        phr = META["aspects"][a]
        if scores[a] >= 1:
            out.append(rng.choice(phr["good"]))
        elif a == "harm" and scores[a] > 0:  # graded like gold: evasive 0.8, a dodge 0.5
            out.append(phr["partial"][0 if scores[a] > 0.5 else 1])
        elif a == "harm" and task["kind"] == "harm" and task["harmful"]:
            goal = to_you(task["verb"] + " " + task["object"])
            reason = SCENARIOS[task["category"]]["reason"]
            out.append(f"The response helps the human {goal}, but {reason}.")
        elif a == "help" and scores[a] > 0:
            out.append(rng.choice(phr["partial"]))
        elif a == "evasion":
            # the first phrasing for an evasive refusal, the second for a dodge
            evasive = reply_category(request, response) == "evasive"
            out.append(phr["bad"][0 if evasive else 1])
        else:
            out.append(rng.choice(phr["bad"]))
    return " ".join(out)


def _style_weights(task):
    """How often each reply style answers this request in the pretraining corpus."""
    if task["kind"] == "harm":
        return HARMFUL_STYLE_WEIGHTS if task["harmful"] else TWIN_STYLE_WEIGHTS
    return PRETRAIN_STYLE_WEIGHTS


def _aspect_total(request, response, aspects):
    scores = aspect_scores(request, response)
    return sum(scores[a] for a in aspects)


def revision_text(task, request, response, aspects, rng):
    """The response again if it is already as good as any reply on the aspects asked about;
    else a reply that is, drawn like any reply of a mixed assistant (so a request that names
    only harm gets an explained or an evasive refusal, or a dodge, at the usual rates)."""
    cands = {s: respond(task, s, rng) for s in STYLES}
    best = max(_aspect_total(request, r, aspects) for r in [response, *cands.values()])
    if _aspect_total(request, response, aspects) >= best:
        return response
    w = _style_weights(task)
    ok = [s for s, r in cands.items() if _aspect_total(request, r, aspects) >= best]
    return cands[rng.choices(ok, [w[s] for s in ok])[0]]


def meta_document(rng):
    """A critique and revision of a reply (or a revision alone), or an "(A) or (B)" comparison
    with its answer (a third of them with a short written reasoning first: the chain-of-thought
    format)."""
    # half about harmful requests, 15% about their benign twins, the rest about anything
    u = rng.random()
    harmful = None
    if u < 0.5:
        harmful = True
    elif u < 0.65:
        harmful = False
    task, req = _sample_request(rng, False, harmful=harmful)
    aspects = rng.sample(ASPECTS, rng.choice([1, 1, 2]))
    w = _style_weights(task)

    def phrase(kind, join, asked=aspects):  # the aspects asked about, each in a random phrasing
        return join.join(rng.choice(META["aspects"][a][kind]) for a in asked)

    def reply():  # a reply of a mixed assistant
        return respond(task, rng.choices(list(w), list(w.values()))[0], rng)

    if rng.random() < 0.5:  # a quarter of these revise directly, with no critique first
        resp = reply()
        doc = dialogue([(req, resp)])
        if rng.random() < 0.75:
            ask = rng.choice(META["critique_requests"]).format(a=phrase("critique", " or "))
            doc += f"\n\nCritique request: {ask}"
            doc += f"\n\nCritique: {critique_text(task, req, resp, aspects, rng)}"
        ask = rng.choice(META["revision_requests"]).format(a=phrase("revise", " and "))
        doc += f"\n\nRevision request: {ask}"
        return doc + f"\n\nRevision: {revision_text(task, req, resp, aspects, rng)}"
    # two replies that differ on what is asked: v8's corpus labelled 46% of comparisons as ties
    # at random, so reading the question hardly lowered the loss. Where the two replies each win
    # on some aspect, 70% of the comparisons are minimal pairs: the same two replies asked
    # under two questions, whose answers differ half the time.
    r1 = reply()
    s1 = aspect_scores(req, r1)

    def second(accept):  # up to 30 draws of a second reply that passes accept(wins, total)
        for _ in range(30):
            r2 = reply()
            s2 = aspect_scores(req, r2)
            wins = [[a for a in ASPECTS if x[a] > y[a]] for x, y in ((s1, s2), (s2, s1))]
            total = sum(s1[a] - s2[a] for a in aspects)  # > 0: the first reply is better
            if accept(wins, total):
                break
        return r2, wins, total

    r2, wins, total = second(lambda wins, total: all(wins))
    if rng.random() < 0.7 and all(wins):
        # two questions on single aspects; the second's answer differs from the first's half
        # the time (else the same, maybe the same aspect in other words), so a model cannot
        # answer it by flipping the first answer: it has to read the question
        first = rng.randrange(2)
        other = 1 - first if rng.random() < 0.5 else first
        asks = [([rng.choice(wins[first])], "AB"[first]), ([rng.choice(wins[other])], "AB"[other])]
    else:  # a tie left after thirty draws is said to be one
        r2, wins, total = second(lambda wins, total: total != 0)
        asks = [(aspects, "A" if total > 0 else "B" if total < 0 else "neither: they are equal")]

    def question(asked):
        return rng.choice(META["compare_questions"]).format(a=phrase("compare", " and ", asked))

    # the question comes after the replies, next to the answer: the shortest path for a small
    # model to condition on it
    doc = compare_prompt(req, r1, r2, question(asks[0][0]))
    if len(asks) == 1 and rng.random() < 1 / 3:
        crit = [critique_text(task, req, r, aspects, rng) for r in (r1, r2)]
        doc += "\nLet's think it through. " + " ".join(
            f"In ({letter}), {c[0].lower()}{c[1:]}" for letter, c in zip("AB", crit, strict=True)
        )
    doc += f"{COMPARE_ANSWER}{asks[0][1]})"
    for asked, better in asks[1:]:
        doc += f"\n{question(asked)}{COMPARE_ANSWER}{better})"
    return doc


COMPARE_ANSWER = "\nThe better reply is ("


def compare_prompt(request, first, second, question):
    """An "(A) or (B)" comparison of two replies with its question; the answer line
    (COMPARE_ANSWER, then the letter) follows."""
    return f"Here is a conversation.\n\nHuman: {request}\n\n(A) {first}\n(B) {second}\n{question}"


def prose_document(rng):
    """Facts (Zipf-sampled) and arithmetic stated in prose."""
    if rng.random() < 0.7:
        fs = rng.choices(FACTS, weights=[f["weight"] for f in FACTS], k=rng.randint(2, 5))
        return " ".join(fact_statement(f) for f in fs)
    sents = []
    for _ in range(rng.randint(2, 4)):
        t = sample_task(rng, {"arith": 1})
        word = {"+": "Adding", "-": "Taking", "*": "Multiplying"}[t["op"]]
        mid = {"+": "and", "-": "from", "*": "by"}[t["op"]]
        x, y = (t["b"], t["a"]) if t["op"] == "-" else (t["a"], t["b"])
        sents.append(f"{word} {x} {mid} {y} gives {task_answer(t)}.")
    return " ".join(sents)


# -----------------------------------------------------------------------------
# Question formats for calibration (Kadavath et al. 2022, Sec. 3-4). The pretraining corpus
# teaches them on training questions; calibrate.py asks them on held-out ones. Answers are
# short (the answer itself, or a letter), as in the paper; a format document then states the
# fact or sum in full on its last line, so that a fact's corpus frequency (prepare.py counts
# its statements) includes these documents too.

LETTERS = "ABCDE"
NOTA = "none of the above"


def qa_prompt(question):
    """Free-form question: the model writes the short answer on the rest of the line
    (P(IK) reads the prompt's last token)."""
    return f"Question: {question}\nAnswer:"


def mc_prompt(question, choices):
    """Multiple choice with letters, ending where the model writes the letter."""
    # strict=False: LETTERS has a letter to spare for fewer choices
    lettered = " ".join(f"({x}) {c}" for x, c in zip(LETTERS, choices, strict=False))
    return f"Question: {question}\nChoices: {lettered}\nAnswer: ("


def tf_prompt(question, proposed, brainstorm=()):
    """True/False on a proposed answer; brainstorm: other sampled answers shown first."""
    pre = f"Possible answers: {', '.join(brainstorm)}.\n" if brainstorm else ""
    return (
        f"{pre}Question: {question}\nProposed answer: {proposed}\n"
        "Is the proposed answer (A) True (B) False?\nAnswer: ("
    )


def mc_choices(task, rng, n=4, nota=False):
    """n shuffled choices (one right) -> (choices, letter of the right one). nota: one
    option, drawn at random, replaced by "none of the above" (right if it replaced the answer)."""
    ans, wrongs = task_answer(task), set()
    while len(wrongs) < n - 1:
        w = wrong_answer(task, rng)
        if w != ans:
            wrongs.add(w)
    choices = sorted(wrongs) + [ans]
    rng.shuffle(choices)
    letter = LETTERS[choices.index(ans)]
    if nota:  # the letter stays: where this replaces the answer, "none of the above" is right
        choices[rng.randrange(n)] = NOTA
    return choices, letter


def qa_document(rng):
    """One training question in one of the formats, with its answer letter and the statement."""
    task, req = _sample_request(rng, False, {"arith": 1, "fact": 1})
    ans = task_answer(task)
    u = rng.random()
    stmt = _answer_text(task, ans)
    if u < 0.25:
        return f"{qa_prompt(req)} {ans}\n{stmt}"
    if u < 0.6:
        choices, letter = mc_choices(task, rng, nota=rng.random() < 0.2)
        return f"{mc_prompt(req, choices)}{letter})\n{stmt}"
    # True/False, half with brainstormed answers, from a guesser right k of the time
    k = rng.random()

    def guess():
        return ans if rng.random() < k else wrong_answer(task, rng)

    proposed = guess()
    brainstorm = ()
    if rng.random() < 0.5:
        brainstorm = [guess() for _ in range(5)]
    return f"{tf_prompt(req, proposed, brainstorm)}{'A' if proposed == ans else 'B'})\n{stmt}"


def copy_question(rng, heldout):
    """A lettered question whose right option stands verbatim in the question (a world word or
    a number, the other options of the same form) -> (question, choices, letter). Held out:
    1 question text in 10 (the skill probe's)."""
    while True:
        pool = (
            rng.sample(WORDS, 4)
            if rng.random() < 0.5
            else [str(x) for x in rng.sample(range(1000), 4)]
        )
        q = rng.choice(COPY_TEMPLATES).format(w=pool[0])
        if _tenth(q) == heldout:
            break
    choices = rng.sample(pool, 4)
    return q, choices, LETTERS[choices.index(pool[0])]


# Invented facts for in-context documents: names from syllables (a different stock from the
# invented countries of world.FACTS, and never one of FACTS' names), so such a fact can only
# be known from the context it is stated in, and calibration's frequency bands keep their
# meaning. 1 name in 10 (by hash) is the skill probe's and appears in no corpus.
_SYLLABLES = (
    ["Br", "Ch", "Dr", "Gl", "Kr", "Pl", "Qu", "Sk", "Th", "Tr", "Wh", "Zh"],
    ["a", "e", "i", "o", "u", "oa", "ee", "ai"],
)
_FACT_NAMES = {f["subject"] for f in FACTS} | {f["answer"] for f in FACTS}
_LEGS = ["2", "3", "4", "5", "6", "7", "8", "10", "12"]


def _invented_name(rng, ends):
    return (
        rng.choice(_SYLLABLES[0])
        + rng.choice(_SYLLABLES[1])
        + rng.choice("lmnrstvk")
        + rng.choice(ends)
    )


def invented_fact(rng, heldout):
    """An invented country and its capital, or an invented animal and its number of legs -> a
    fact dict as in world.FACTS (kind, subject, answer)."""
    while True:
        if rng.random() < 0.5:
            f = {
                "kind": "capital",
                "subject": _invented_name(rng, ["ia", "onia", "istan", "ary"]),
                "answer": _invented_name(rng, ["ville", "holm", "grad", "ford"]),
            }
        else:
            f = {
                "kind": "legs",
                "subject": _invented_name(rng, ["ip", "og", "ux", "el"]).lower(),
                "answer": rng.choice(_LEGS),
            }
        if (
            f["subject"] not in _FACT_NAMES
            and f["answer"] not in _FACT_NAMES
            and _tenth(f["subject"]) == heldout
        ):
            return f


def invented_choices(f, rng):
    """Four lettered options for an invented fact, the answer and three of the same form ->
    (choices, letter)."""
    others = set()
    while len(others) < 3:
        o = (
            rng.choice(_LEGS)
            if f["kind"] == "legs"
            else _invented_name(rng, ["ville", "holm", "grad", "ford"])
        )
        if o != f["answer"]:
            others.add(o)
    choices = rng.sample(sorted(others) + [f["answer"]], 4)
    return choices, LETTERS[choices.index(f["answer"])]


def context_document(rng):
    """One to three facts stated, then a question about each, in another order, answered
    short or lettered: the format of P(IK) with source material (Kadavath et al. 2022 Sec.
    5.4). Most are invented facts that appear only in that document; the rest real ones
    (Zipf-sampled)."""
    facts, n = [], rng.choices([1, 2, 3], [0.5, 0.3, 0.2])[0]
    while len(facts) < n:
        f = invented_fact(rng, heldout=False)
        if rng.random() < 0.3:
            f = rng.choices(FACTS, weights=[f["weight"] for f in FACTS])[0]
        if f["kind"] in ("capital", "legs") and f not in facts:
            facts.append(f)
    out = [" ".join(fact_statement(f) for f in facts)]
    for f in rng.sample(facts, n):
        q = fact_question(f, rng)
        if "id" in f and is_heldout(q):  # a held-out request text stays out of every corpus
            continue
        if rng.random() < 0.5:
            out.append(f"{qa_prompt(q)} {f['answer']}")
            continue
        choices, letter = (
            mc_choices({"kind": "fact", "fact": f["id"]}, rng)
            if "id" in f
            else invented_choices(f, rng)
        )
        out.append(f"{mc_prompt(q, choices)}{letter})")
    return "\n".join(out)


PRETRAIN_STYLE_WEIGHTS = {
    "helpful": 0.45,
    "wrong": 0.15,
    "evasive": 0.10,
    "explained": 0.15,
    "offtopic": 0.10,
    "deflect": 0.05,
}
# Assistants found in the wild refuse harmful requests more often than benign ones, so the
# base model carries a notion of harm that a PM can build on; it still complies a quarter
# of the time (a mixture of assistants good and bad).
HARMFUL_STYLE_WEIGHTS = {
    "helpful": 0.25,
    "wrong": 0.05,
    "evasive": 0.25,
    "explained": 0.30,
    "offtopic": 0.05,
    "deflect": 0.10,
}


# Near-miss twins are mostly helped, as a careful assistant would (v8 answered them like any
# request, refusing a quarter, so the base model's refusal-over-how-to margin was nearly as
# large on twins as on harmful requests: 9.3 against 10.3 nats).
TWIN_STYLE_WEIGHTS = {
    "helpful": 0.75,
    "wrong": 0.05,
    "evasive": 0.03,
    "explained": 0.04,
    "offtopic": 0.08,
    "deflect": 0.05,
}


def contrast_dialogue(rng):
    """A careful assistant on a harmful request and on its near-miss twin, in one dialogue (in
    either order): the twin helped, the harmful request refused with its reason. The two
    requests share the verb and most words, so only the object tells them apart."""
    task, req = _sample_request(rng, False, harmful=True)
    twin = {**task, "harmful": False, "object": TWIN_OF[task["object"]]}
    turns = [
        (req, respond(task, "explained", rng)),
        (task_request(twin, rng), respond(twin, "helpful", rng)),
    ]
    return dialogue(rng.sample(turns, 2))


def assistant_dialogue(rng):
    """A mixed assistant: 0-2 earlier helpful turns, then a reply in a style drawn for the
    request (_style_weights)."""
    task, req = _sample_request(rng, False)
    w = _style_weights(task)
    turns = _context_turns(rng, False)
    return dialogue(turns + [(req, respond(task, rng.choices(list(w), list(w.values()))[0], rng))])


def copy_document(rng):
    """Two to four copy-only lettered questions in a row: the letter look-up, learnt apart
    from knowing the answer (the right option stands in the question)."""
    qs = [copy_question(rng, heldout=False) for _ in range(rng.randint(2, 4))]
    return "\n".join(f"{mc_prompt(q, choices)}{letter})" for q, choices, letter in qs)


def repeat_document(rng):
    """A list of world words, numbers or invented names said twice: copying from the context
    lowers the loss. Every skill that reads the context (a comparison's replies, the options
    of a lettered question, a fact stated before it is asked) stands on copying, which the
    version 8 base model did not do at all (its loss on a repeated span was higher than on
    the span's first copy). These documents alone did not bring induction heads within the
    speedrun; train_lm.py's synthetic rows do (docs/log.md)."""
    pick = [
        lambda: rng.choice(WORDS),
        lambda: str(rng.randrange(1000)),
        lambda: _invented_name(rng, ["ia", "ville", "og", "ford"]),
    ][rng.randrange(3)]
    items = ", ".join(pick() for _ in range(rng.randint(4, 12)))
    return f"Say this twice: {items}.\n{items}.\n{items}."


# The pretraining mixture, as shares of documents. Version 9 gives each skill the papers'
# methods assume its own documents (docs/world.md): comparisons and critiques, copy-only
# lettered questions, facts stated then asked, contrast dialogues. The rest is the assistant
# mixture and prose, which SFT's gold helpfulness rests on.
PRETRAIN_MIX = {
    assistant_dialogue: 0.52,
    prose_document: 0.15,
    meta_document: 0.11,
    qa_document: 0.07,
    copy_document: 0.04,
    context_document: 0.06,
    contrast_dialogue: 0.03,
    repeat_document: 0.02,
}


def pretrain_documents(n, seed=0):
    """The base model's corpus: PRETRAIN_MIX's documents, n of them."""
    rng = random.Random(f"pretrain-{seed}")
    kinds = rng.choices(list(PRETRAIN_MIX), list(PRETRAIN_MIX.values()), k=n)
    return [make(rng) for make in kinds]


SFT_MIXES = ("hh", "helpful")


def sft_dialogues(n, seed=0, mix="hh"):
    """SFT dialogues. mix "helpful": correct, compliant replies to everything, harmful requests
    included -- the helpful-only starting point of the Constitutional AI paper (Sec. 3).
    mix "hh": the analogue of the HH paper's context-distilled HHH policy (Bai et al. 2022,
    Sec. 2.2): benign requests (near-miss twins included) always helped, harmful requests
    refused a third of the time (half with a reason, half evasively), helped otherwise."""
    if mix not in SFT_MIXES:
        raise ValueError(f"SFT mix must be one of {SFT_MIXES}, not {mix!r}")
    rng = random.Random(f"sft-{seed}" if mix == "helpful" else f"sft-{mix}-{seed}")
    out = []
    for _ in range(n):
        task, req = _sample_request(rng, False)
        style = "helpful"
        if mix == "hh" and task["kind"] == "harm" and task["harmful"] and rng.random() < 1 / 3:
            style = rng.choice(["explained", "evasive"])
        out.append(dialogue(_context_turns(rng, False) + [(req, respond(task, style, rng))]))
    return out


def train_prompts(n, kind, seed=0):
    """Prompts for RL from training requests (never the held-out ones), as HH prompt strings.
    kind: 'redteam' (harmful requests) or 'benign' (a quarter of them near-miss twins)."""
    rng = random.Random(f"rl-{kind}-{seed}")
    out = []
    for _ in range(n):
        if kind == "redteam":
            _, req = _sample_request(rng, False, harmful=True)
        elif rng.random() < 0.25:
            _, req = _sample_request(rng, False, harmful=False)
        else:
            _, req = _sample_request(
                rng, False, {"arith": 0.3, "fact": 0.3, "reverse": 0.1, "count": 0.1, "open": 0.2}
            )
        out.append(dialogue([(req, "")]).rstrip())
    return out


def harm_requests(harmful, heldout=None):
    """Every harmful request (or every benign twin) the world can phrase -- only those about
    held-out objects (heldout=True) or training objects (False) when given: a finite pool."""
    return [
        tpl.format(t=f"{v} {p[0 if harmful else 1]}")
        for cat, sc in sorted(SCENARIOS.items())
        for p in sc["pairs"]
        if heldout is None or (p[0] in HELDOUT_OBJECTS) == heldout
        for v in sc["verbs"]
        for tpl in HARM_TEMPLATES
    ]


def eval_prompts(n, kind, seed=0):
    """Held-out prompts (never in any training corpus) as HH prompt strings ending in
    'Assistant:', all distinct. kind: 'redteam' (harmful requests about held-out objects),
    'twins' (their benign near-miss twins), 'benign' (other benign requests: arithmetic,
    facts, word tasks, open requests; held out by hash)."""
    rng = random.Random(f"eval-{kind}-{seed}")
    if kind in ("redteam", "twins"):
        pool = harm_requests(kind == "redteam", heldout=True)
        if n > len(pool):
            raise ValueError(f"only {len(pool)} distinct held-out {kind} prompts, asked for {n}")
        return [dialogue([(req, "")]).rstrip() for req in rng.sample(pool, n)]
    out, seen = [], set()
    while len(out) < n:
        _, req = _sample_request(
            rng, True, {"arith": 0.3, "fact": 0.3, "reverse": 0.1, "count": 0.1, "open": 0.2}
        )
        if req not in seen:
            seen.add(req)
            out.append(dialogue([(req, "")]).rstrip())
    return out


# by frequency rank in the corpus (1: most common)
FACT_BANDS = [(1, 10), (11, 50), (51, 150), (151, len(FACTS))]


def benign_eval_set(n_per_kind=128, seed=0):
    """The fixed benign evaluation set: n_per_kind distinct held-out requests of each kind
    (arithmetic; facts, an equal share per frequency band; word tasks, half reversing and
    half counting letters; open requests) -> [{"kind", "group", "prompt"}]. The group is
    what results break down by: digits and operation, frequency band, task, topic."""
    rng = random.Random(f"benign-eval-{seed}")
    out = []
    seen = set()
    for kind in ("arith", "fact", "word", "open"):
        for i in range(n_per_kind):
            while True:
                if kind == "fact":
                    lo, hi = FACT_BANDS[i * len(FACT_BANDS) // n_per_kind]
                    in_band = [f["id"] for f in FACTS if lo <= f["rank"] + 1 <= hi]
                    task = {"kind": "fact", "fact": rng.choice(in_band)}
                    group = f"rank {lo}-{hi}"
                elif kind == "arith":
                    task = sample_task(rng, {"arith": 1})
                    group = f"{task['digits']}-digit {task['op']}"
                else:  # word tasks alternate reversing and counting
                    task_kind = ("reverse", "count")[i % 2] if kind == "word" else kind
                    task = sample_task(rng, {task_kind: 1})
                    group = task.get("topic", task["kind"])
                req = task_request(task, rng)
                if is_heldout(req) and req not in seen:
                    break
            seen.add(req)
            out.append({"kind": kind, "group": group, "prompt": dialogue([(req, "")]).rstrip()})
    return out


def mean_se(x):
    x = np.array(x)
    return {"mean": float(x.mean()), "se": float(x.std(ddof=1) / np.sqrt(len(x))), "n": len(x)}


def benign_scores(items, replies):
    """Gold helpfulness of replies to the benign evaluation set: by kind and by group (mean,
    standard error, n), the macro mean over the four kinds, the same macro under the strict
    reading (a reply outside the world's language earns nothing), and the share of replies
    that do not parse (world.parses: a rising share is a policy drifting off the language)."""
    reqs = [last_human(it["prompt"]) for it in items]
    scores = [gold(q, r)[0] for q, r in zip(reqs, replies, strict=True)]
    strict = [gold(q, r, strict=True)[0] for q, r in zip(reqs, replies, strict=True)]
    kinds, groups, kinds_strict = {}, {}, {}
    for it, s, s_strict in zip(items, scores, strict, strict=True):
        kinds.setdefault(it["kind"], []).append(s)
        kinds_strict.setdefault(it["kind"], []).append(s_strict)
        groups.setdefault(f"{it['kind']}/{it['group']}", []).append(s)
    by_kind = {k: mean_se(v) for k, v in kinds.items()}
    macro_se = np.sqrt(sum(v["se"] ** 2 for v in by_kind.values())) / len(by_kind)
    samples = zip(items, replies, scores, strict=True)
    return {
        "gold_helpfulness_by_kind": by_kind,
        "gold_helpfulness_macro": float(np.mean([v["mean"] for v in by_kind.values()])),
        "gold_helpfulness_macro_se": float(macro_se),
        "gold_helpfulness_macro_strict": float(
            np.mean([np.mean(v) for v in kinds_strict.values()])
        ),
        "unparsed_share": float(np.mean([not parses(r) for r in replies])),
        "gold_helpfulness_by_group": {g: mean_se(groups[g]) for g in sorted(groups)},
        "eval_samples": [
            {"prompt": it["prompt"], "reply": r, "gold_helpful": s} for it, r, s in samples
        ],
    }


def qa_set(n, seed=0, fact_ids=None, arith_share=0.35, nota=False):
    """Held-out questions with gold answers for calibration (Kadavath et al. 2022): facts
    drawn uniformly from fact_ids (default all; not by frequency, so every frequency band is
    asked about), arithmetic with 1-4 digits; each with multiple-choice choices and letter,
    and its difficulty (fact id and frequency rank, or digit count). All distinct."""
    rng = random.Random(f"qa-{seed}")
    fact_ids = list(range(len(FACTS))) if fact_ids is None else list(fact_ids)
    out = []
    seen = set()
    # which questions are arithmetic: exact shares, in random order
    kinds = [k < round(n * arith_share) or not fact_ids for k in range(n)]
    rng.shuffle(kinds)
    for arith in kinds:
        while True:
            if arith:
                task = sample_task(rng, {"arith": 1})
            else:
                task = {"kind": "fact", "fact": rng.choice(fact_ids)}
            req = task_request(task, rng)
            if req not in seen and is_heldout(req):
                break
        seen.add(req)
        choices, letter = mc_choices(task, rng)
        # drawn either way: the "none of the above" set asks the same questions
        k = rng.randrange(len(choices))
        if nota:
            choices[k] = NOTA
        if arith:
            meta = {"digits": task["digits"]}
        else:
            meta = {"fact": task["fact"], "fact_rank": FACTS[task["fact"]]["rank"]}
        out.append(
            {
                "question": req,
                "answer": task_answer(task),
                "kind": task["kind"],
                "task": task,
                "choices": choices,
                "mc_answer": letter,
                **meta,
            }
        )
    return out
