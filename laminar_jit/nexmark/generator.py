"""The Nexmark event generator, vectorized.

Events are numbered ``0, 1, 2, …`` in arrival order. Out of every 50 events,
1 is a person, 3 are auctions and 46 are bids, by the event number's place in
its group of 50 — the proportions and the id arithmetic of the Nexmark
specification, so every auction's seller and every bid's auction and bidder
are ids the stream has (or is about to have) introduced:

* a person's id is ``1000 + (event // 50)``, an auction's id
  ``1000 + 3 · (event // 50) + (event % 50) - 1``;
* an auction's seller is, with probability 3/4, the *hot* seller (the first
  person of the latest block of 100 people), otherwise one of the 1,000 most
  recent people or up to 10 ahead;
* a bid's auction is, with probability 1/2, the hot auction (the first of the
  latest block of 100 auctions), otherwise one of the 100 auctions in flight
  or up to 10 ahead; its bidder, with probability 3/4, the hot bidder (the
  second person of the latest block of 100), otherwise a recent person;
* prices are ``round(10 ** U(0, 6) * 100)`` cents; an auction's reserve is its
  initial bid plus another price, and it expires after a random length
  averaging the time until 100 more auctions exist;
* 99 of 100 bids come through one of four hot channels, the rest through one
  of 10,000 others; ``extra`` pads each event to the specification's average
  size (person 200 bytes, auction 500, bid 100).

Event time advances by ``1 / rate`` seconds per event from a fixed epoch.
With ``max_delay`` > 0 every event's time is moved back by a uniform random
amount of up to ``max_delay`` milliseconds, so the streams are out of order
but bounded: a source watermark of ``BoundedOutOfOrderness(max_delay)``
never finds a late event.

All columns are produced with numpy over whole chunks of events and strings
are built as Arrow buffers (slices of one random pool for the free text), so
generating is much faster than any query over it.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._jit import njit
from ..io.sources import Source

__all__ = ["AUCTION_SCHEMA", "BID_SCHEMA", "PERSON_SCHEMA", "SIDE_INPUT_ROWS", "NexmarkEvents", "generate", "side_input"]

_TS = pa.timestamp("ms")

#: Schema of the person stream.
PERSON_SCHEMA = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("email_address", pa.string()), ("credit_card", pa.string()),
    ("city", pa.string()), ("state", pa.string()), ("date_time", _TS), ("extra", pa.string()),
])
#: Schema of the auction stream.
AUCTION_SCHEMA = pa.schema([
    ("id", pa.int64()), ("item_name", pa.string()), ("description", pa.string()), ("initial_bid", pa.int64()),
    ("reserve", pa.int64()), ("date_time", _TS), ("expires", _TS), ("seller", pa.int64()),
    ("category", pa.int64()), ("extra", pa.string()),
])
#: Schema of the bid stream (``channel`` and ``url`` dictionary-encoded).
BID_SCHEMA = pa.schema([
    ("auction", pa.int64()), ("bidder", pa.int64()), ("price", pa.int64()),
    ("channel", pa.dictionary(pa.int32(), pa.string())), ("url", pa.dictionary(pa.int32(), pa.string())),
    ("date_time", _TS), ("extra", pa.string()),
])

# The specification's constants.
PROPORTION = 50
PERSON_PROPORTION, AUCTION_PROPORTION = 1, 3
FIRST_PERSON_ID = FIRST_AUCTION_ID = 1000
FIRST_CATEGORY_ID, NUM_CATEGORIES = 10, 5
NUM_ACTIVE_PEOPLE, NUM_IN_FLIGHT_AUCTIONS, ID_LEAD = 1000, 100, 10
HOT_AUCTION_RATIO = HOT_SELLER_RATIO = HOT_BIDDER_RATIO = HOT_CHANNELS_RATIO = 100
P_HOT_AUCTION, P_HOT_SELLER, P_HOT_BIDDER = 2, 4, 4  # hot with probability 1 - 1/p
AVG_PERSON_BYTES, AVG_AUCTION_BYTES, AVG_BID_BYTES = 200, 500, 100
NUM_CHANNELS = 10_000
#: Event time of event 0: 2024-01-01T00:00:00 in milliseconds since the epoch.
BASE_TIME_MS = 1_704_067_200_000

_US_STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"]
_US_CITIES = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle",
              "Kent", "Cheyenne"]
_FIRST_NAMES = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"]
_LAST_NAMES = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"]
_HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"]
N_NAMES, N_CITIES, N_STATES, N_HOT_CHANNELS = len(_FIRST_NAMES) * len(_LAST_NAMES), len(_US_CITIES), len(_US_STATES), 4


@dataclass
class NexmarkEvents:
    """Generated events as Arrow batches, in arrival order.

    Attributes
    ----------
    chunks : list of dict of str to pyarrow.RecordBatch
        One dict per chunk of consecutive events: ``{"person": …, "auction": …,
        "bid": …}``, each the chunk's events of that stream (possibly empty).
        Feeding the chunks in order, stream by stream, replays the arrival
        order up to the chunk size.
    events : int
        Number of events (all three streams).
    """

    chunks: list
    events: int

    def table(self, stream: str) -> pa.Table:
        """All events of ``stream`` (``"person"``, ``"auction"`` or ``"bid"``) as one table."""
        return pa.Table.from_batches([c[stream] for c in self.chunks], schema=SCHEMAS[stream])

    def __repr__(self) -> str:
        counts = {s: sum(c[s].num_rows for c in self.chunks) for s in SCHEMAS}
        return f"NexmarkEvents({self.events:,} events: " + ", ".join(f"{n:,} {s}" for s, n in counts.items()) + ")"


#: Stream name -> schema, in the order streams are fed.
SCHEMAS = {"person": PERSON_SCHEMA, "auction": AUCTION_SCHEMA, "bid": BID_SCHEMA}


def generate(events: int, seed: int = 0, rate: int = 10_000, max_delay: int = 100,
             chunk_size: int = 65_536) -> NexmarkEvents:
    """Generate ``events`` Nexmark events (persons, auctions and bids 1 : 3 : 46).

    Parameters
    ----------
    events : int
        Number of events over the three streams.
    seed : int
        Seed; the same arguments give the same events.
    rate : int
        Events per second of event time (the specification's first-event rate).
    max_delay : int
        Bound of the out-of-orderness in milliseconds (0: event time never
        decreases). Use ``lj.BoundedOutOfOrderness(datetime.timedelta(milliseconds=max_delay))``.
    chunk_size : int
        Events per chunk (each chunk becomes one batch per stream).

    Returns
    -------
    NexmarkEvents

    Examples
    --------
    >>> from laminar_jit import nexmark
    >>> ev = nexmark.generate(100_000, seed=1)
    >>> ev.table("bid").num_rows
    92000
    """
    if events < 0 or chunk_size <= 0 or rate <= 0 or max_delay < 0:
        raise ValueError("generate: events, max_delay >= 0 and chunk_size, rate > 0 are required")
    gen = _Generator(seed, rate, max_delay, chunk_size)
    bounds = [(lo, min(lo + chunk_size, events)) for lo in range(0, events, chunk_size)]
    if len(bounds) < 4:
        return NexmarkEvents([gen.chunk(lo, hi) for lo, hi in bounds], events)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # the kernel releases the GIL
        return NexmarkEvents(list(pool.map(lambda b: gen.chunk(*b), bounds)), events)


class NexmarkSource(Source):
    """One Nexmark stream generated lazily, chunk by chunk, as a replayable source.

    Build the three with :func:`sources`. Chunks are generated when read, so
    a reader holds one chunk at a time; the sources of one generator share
    it, so reading the three streams in turn generates each chunk once.
    :meth:`split` deals chunks round robin: every shard generates only its
    own chunks (the events do not depend on who generates them).

    Parameters
    ----------
    stream : {"person", "auction", "bid"}
    events, seed, rate, max_delay, chunk_size
        As for :func:`generate`.
    chunks : sequence of int, optional
        Only these chunk numbers, in this order (a shard); all by default.
    """

    def __init__(self, stream: str, events: int, seed: int = 0, rate: int = 10_000, max_delay: int = 100,
                 chunk_size: int = 65_536, chunks=None):
        if stream not in SCHEMAS:
            raise ValueError(f"NexmarkSource: stream must be one of {list(SCHEMAS)}, got {stream!r}")
        if events < 0 or chunk_size <= 0 or rate <= 0 or max_delay < 0:
            raise ValueError("NexmarkSource: events, max_delay >= 0 and chunk_size, rate > 0 are required")
        self.stream, self.events, self.seed, self.rate = stream, int(events), int(seed), int(rate)
        self.max_delay, self.chunk_size = int(max_delay), int(chunk_size)
        n_chunks = -(-self.events // self.chunk_size)
        self.chunks = list(range(n_chunks)) if chunks is None else [int(c) for c in chunks]
        self.schema = SCHEMAS[stream]
        lo = np.array(self.chunks, np.int64) * self.chunk_size
        hi = np.minimum(lo + self.chunk_size, self.events)
        self._ends = np.cumsum(_stream_count(self.stream, hi) - _stream_count(self.stream, lo))

    @property
    def total_rows(self) -> int:
        """Rows of this stream in the source's chunks (known without generating them)."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def describe(self) -> str:
        """``"NexmarkSource('bid', <events>, seed=<seed>)"``."""
        return f"NexmarkSource({self.stream!r}, {self.events:,}, seed={self.seed}, chunks={len(self.chunks)})"

    def batches(self, start_row: int = 0):
        """Yield the stream's rows of each chunk from row ``start_row`` on (see :meth:`Source.batches`)."""
        start_row = self._check_start_row(start_row, self.total_rows)
        index = int(np.searchsorted(self._ends, start_row, side="right"))
        skip = start_row - (int(self._ends[index - 1]) if index > 0 else 0)
        return self._iter(index, skip)

    def _iter(self, index: int, skip: int):
        gen = _shared_generator(self.seed, self.rate, self.max_delay, self.chunk_size)
        for c in self.chunks[index:]:
            lo = c * self.chunk_size
            batch = gen.cached_chunk(lo, min(lo + self.chunk_size, self.events))[self.stream]
            if skip:
                batch, skip = batch.slice(skip), 0
            if batch.num_rows:
                yield batch

    def part_rows(self) -> list[int]:
        """This stream's rows of each chunk (the parts :meth:`split` deals)."""
        return np.diff(self._ends, prepend=0).tolist()

    def split(self, shards: int) -> list:
        """Deal the chunks round robin into ``shards`` sources (see :meth:`Source.split`)."""
        return [NexmarkSource(self.stream, self.events, self.seed, self.rate, self.max_delay, self.chunk_size,
                              self.chunks[i::shards]) for i in range(int(shards))]


def sources(events: int, seed: int = 0, rate: int = 10_000, max_delay: int = 100,
            chunk_size: int = 65_536) -> dict:
    """The three streams as lazily generated sources, ``{"person": …, "auction": …, "bid": …}``.

    They produce exactly the events of :func:`generate` with the same
    arguments, for :func:`laminar_jit.run` (``sources=lj.nexmark.sources(…)``)
    and for partitioned runs, where each reader generates its own chunks.
    """
    return {s: NexmarkSource(s, events, seed, rate, max_delay, chunk_size) for s in SCHEMAS}


#: Rows of q13's side input.
SIDE_INPUT_ROWS = 10_000


def side_input(rows: int = SIDE_INPUT_ROWS) -> pa.Table:
    """q13's bounded side table: ``key`` 0 … ``rows - 1`` and a text ``value`` per key.

    It stands in for the file Flink's q13 reads (``side_input.txt``: a ``BIGINT`` key and a
    ``VARCHAR`` value per line); bids join it on ``auction % rows``.
    """
    keys = np.arange(rows, dtype=np.int64)
    return pa.table({"key": keys, "value": pa.array([f"side-{k}" for k in keys.tolist()], pa.string())})


def _stream_count(stream: str, n: np.ndarray) -> np.ndarray:
    """Events of ``stream`` among event numbers ``0 .. n-1`` (the 1 : 3 : 46 pattern per 50)."""
    lo, hi = {"person": (0, PERSON_PROPORTION),
              "auction": (PERSON_PROPORTION, PERSON_PROPORTION + AUCTION_PROPORTION),
              "bid": (PERSON_PROPORTION + AUCTION_PROPORTION, PROPORTION)}[stream]
    return n // PROPORTION * (hi - lo) + np.clip(n % PROPORTION - lo, 0, hi - lo)


@functools.lru_cache(maxsize=4)
def _shared_generator(seed: int, rate: int, max_delay: int, chunk_size: int) -> "_Generator":
    return _Generator(seed, rate, max_delay, chunk_size)


def auction_horizon_ms(rate: int = 10_000) -> int:
    """Average auction length in ms at ``rate`` events/s: the time until 100 more auctions exist.

    Lengths are ``1 + U[0, 2 * horizon)``, so no auction lasts more than
    ``1 + 2 * auction_horizon_ms(rate)`` ms.
    """
    return max(NUM_IN_FLIGHT_AUCTIONS * PROPORTION // AUCTION_PROPORTION * 1000 // rate, 1)


class _Generator:
    def __init__(self, seed: int, rate: int, max_delay: int, chunk_size: int):
        self.seed, self.rate, self.max_delay = seed, rate, max_delay
        rng = np.random.default_rng([seed, 0])
        # free text: lowercase letters and spaces (1 in 27), enough for the longest column of a chunk
        pool = rng.integers(0, 27, max(1 << 22, 128 * chunk_size), dtype=np.uint8)
        pool += ord("a")
        pool[pool > ord("z")] = ord(" ")
        self.pool, self.pool_buffer = pool, pa.py_buffer(pool)
        self.names = pa.array([f"{f} {l}" for f in _FIRST_NAMES for l in _LAST_NAMES])
        self.cities, self.states = pa.array(_US_CITIES), pa.array(_US_STATES)
        self.channels = pa.array(_HOT_CHANNELS + [f"channel-{i}" for i in range(NUM_CHANNELS)])
        self.urls = pa.array([f"https://www.nexmark.com/{c.lower()}/item.htm?query=1" for c in _HOT_CHANNELS]
                             + [f"https://www.nexmark.com/item.htm?query=1&channel_id={i}" for i in range(NUM_CHANNELS)])
        self.horizon_ms = auction_horizon_ms(rate)
        self._last = None

    def cached_chunk(self, lo: int, hi: int) -> dict:
        """:meth:`chunk`, remembering the last one (the three streams' sources read it in turn)."""
        if self._last is None or self._last[0] != (lo, hi):
            self._last = ((lo, hi), self.chunk(lo, hi))
        return self._last[1]

    def chunk(self, lo: int, hi: int) -> dict:
        p, card, a, b = _columns(lo, hi, self.seed, self.rate, self.max_delay, self.horizon_ms)
        text = np.random.default_rng([self.seed, 1, lo])  # where text columns start in the pool
        return {"person": self._persons(text, p, card), "auction": self._auctions(text, a),
                "bid": self._bids(text, b)}

    def _text(self, rng, lengths: np.ndarray) -> pa.Array:
        """Strings of the given lengths: consecutive pieces of the random pool from a random place.

        Every array shares the pool as its data buffer (no copy); only the
        offsets are new.
        """
        offsets = np.empty(lengths.size + 1, np.int32)
        offsets[0] = 0
        np.cumsum(lengths.astype(np.int32), out=offsets[1:])
        offsets += int(rng.integers(0, self.pool.size - int(offsets[-1]) + 1))
        return pa.StringArray.from_buffers(lengths.size, pa.py_buffer(offsets), self.pool_buffer)

    @staticmethod
    def _timestamps(ts: np.ndarray) -> pa.Array:
        return pa.Array.from_buffers(_TS, ts.size, [None, pa.py_buffer(np.ascontiguousarray(ts))])

    @staticmethod
    def _fixed_width(digits: np.ndarray, template: bytes) -> pa.Array:
        """Strings of one width: ``template`` with each ``#`` replaced by the next digit column."""
        n, width = digits.shape[0], len(template)
        buf = np.tile(np.frombuffer(template, np.uint8), (n, 1))
        buf[:, [i for i, c in enumerate(template) if c == ord("#")]] = digits + ord("0")
        offsets = np.arange(n + 1, dtype=np.int32) * width
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf.ravel()))

    def _persons(self, rng, p: np.ndarray, card: np.ndarray) -> pa.RecordBatch:
        names = self.names.take(p[2])
        email = pc.binary_join_element_wise(self._text(rng, p[5]), self._text(rng, p[6]), "@")
        email = pc.binary_join_element_wise(email, ".com", "")
        city, state = self.cities.take(p[3]), self.states.take(p[4])
        return pa.record_batch([pa.array(p[0]), names, email, self._fixed_width(card, b"#### #### #### ####"),
                                city, state, self._timestamps(p[1]), self._text(rng, p[7])],
                               schema=PERSON_SCHEMA)

    def _auctions(self, rng, a: np.ndarray) -> pa.RecordBatch:
        return pa.record_batch([pa.array(a[0]), self._text(rng, a[7]), self._text(rng, a[8]), pa.array(a[5]),
                                pa.array(a[6]), self._timestamps(a[1]), self._timestamps(a[2]), pa.array(a[3]),
                                pa.array(a[4]), self._text(rng, a[9])], schema=AUCTION_SCHEMA)

    def _bids(self, rng, b: np.ndarray) -> pa.RecordBatch:
        channel = pa.array(b[4].astype(np.int32))
        return pa.record_batch([pa.array(b[0]), pa.array(b[1]), pa.array(b[2]),
                                pa.DictionaryArray.from_arrays(channel, self.channels),
                                pa.DictionaryArray.from_arrays(channel, self.urls),
                                self._timestamps(b[3]), self._text(rng, b[5])], schema=BID_SCHEMA)


# -- the kernel ------------------------------------------------------------------------
# Every random draw is a hash of (seed, event number, draw number), so an event
# is the same whichever chunk generates it.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_DRAW = np.uint64(0xD1B54A32D192ED03)
_NAME_LENGTHS = np.array([len(f) + 1 + len(l) for f in _FIRST_NAMES for l in _LAST_NAMES], np.int64)
_CITY_LENGTHS = np.array([len(c) for c in _US_CITIES], np.int64)


@njit(inline="always")
def _mix(z):
    # splitmix64's finalizer
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _below(key, k, m):
    """Draw ``k`` of an event: an integer in ``[0, m)`` for ``m < 2**32`` (multiply-shift, no division)."""
    return np.int64(((_mix(key + np.uint64(k) * _DRAW) >> np.uint64(32)) * np.uint64(m)) >> np.uint64(32))


@njit(inline="always")
def _uniform(key, k):
    """Draw ``k`` of an event: a float in ``[0, 1)``."""
    return np.float64(_mix(key + np.uint64(k) * _DRAW) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(inline="always")
def _last_person(e):
    """Base-0 id of the newest person at event ``e`` (the person itself for a person event)."""
    return e // PROPORTION * PERSON_PROPORTION + min(e % PROPORTION, PERSON_PROPORTION - 1)


@njit(inline="always")
def _last_auction(e):
    """Base-0 id of the newest auction at event ``e`` (the auction itself for an auction event)."""
    epoch, offset = e // PROPORTION, e % PROPORTION
    if offset < PERSON_PROPORTION:  # a person: the last auction of the previous epoch
        return (epoch - 1) * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    return epoch * AUCTION_PROPORTION + min(offset - PERSON_PROPORTION, AUCTION_PROPORTION - 1)


@njit(inline="always")
def _recent_person(e, key, k):
    # nextBase0PersonId: one of the active people, or a few ids ahead
    count = _last_person(e) + 1
    active = min(count, NUM_ACTIVE_PEOPLE)
    return count - active + _below(key, k, active + ID_LEAD)


@njit(inline="always")
def _price(key, k):
    return np.int64(np.round(10.0 ** (_uniform(key, k) * 6.0) * 100.0))


@njit(inline="always")
def _extra_length(key, k, current, average):
    # nextExtra: pad to the average size, +-20 %
    want = max(average - current, 0)
    delta = np.int64(np.round(want * 0.2))
    return want - delta + np.int64(_uniform(key, k) * 2 * delta)


@njit
def _columns(lo, hi, seed, rate, max_delay, horizon_ms):
    """Numeric columns, string lengths and string choices of events ``lo .. hi-1``, per stream."""
    n_person = n_auction = 0
    for e in range(lo, hi):
        off = e % PROPORTION
        if off < PERSON_PROPORTION:
            n_person += 1
        elif off < PERSON_PROPORTION + AUCTION_PROPORTION:
            n_auction += 1
    n_bid = hi - lo - n_person - n_auction
    # person: id, ts, name, city, state, email local / domain length, extra length
    p_int = np.empty((8, n_person), np.int64)
    p_card = np.empty((n_person, 16), np.uint8)
    # auction: id, ts, expires, seller, category, initial bid, reserve, item / description / extra length
    a_int = np.empty((10, n_auction), np.int64)
    # bid: auction, bidder, price, ts, channel, extra length
    b_int = np.empty((6, n_bid), np.int64)
    ip = ia = ib = 0
    seed_key = _mix(np.uint64(seed) * _GOLDEN + np.uint64(0x632BE59BD9B4E019))
    for e in range(lo, hi):
        key = _mix(seed_key ^ (np.uint64(e) * _GOLDEN))
        off = e % PROPORTION
        ts = BASE_TIME_MS + e * 1000 // rate
        if max_delay > 0:
            ts -= _below(key, 0, max_delay + 1)
        if off < PERSON_PROPORTION:
            name, city = _below(key, 1, N_NAMES), _below(key, 2, N_CITIES)
            local, domain = 3 + _below(key, 4, 4), 3 + _below(key, 5, 2)  # nextString(7), nextString(5)
            p_int[0, ip] = _last_person(e) + FIRST_PERSON_ID
            p_int[1, ip] = ts
            p_int[2, ip] = name
            p_int[3, ip] = city
            p_int[4, ip] = _below(key, 3, N_STATES)
            p_int[5, ip] = local
            p_int[6, ip] = domain
            size = 8 + _NAME_LENGTHS[name] + local + 1 + domain + 4 + 19 + _CITY_LENGTHS[city] + 2
            p_int[7, ip] = _extra_length(key, 7, size, AVG_PERSON_BYTES)
            for half in range(2):
                digits = _below(key, 10 + half, 100_000_000)
                for j in range(8):
                    p_card[ip, 8 * half + 7 - j] = digits % 10
                    digits //= 10
            ip += 1
        elif off < PERSON_PROPORTION + AUCTION_PROPORTION:
            if _below(key, 2, P_HOT_SELLER) > 0:
                seller = _last_person(e) // HOT_SELLER_RATIO * HOT_SELLER_RATIO
            else:
                seller = _recent_person(e, key, 3)
            initial = _price(key, 5)
            item, desc = 3 + _below(key, 7, 17), 3 + _below(key, 8, 97)  # nextString(20), nextString(100)
            a_int[0, ia] = _last_auction(e) + FIRST_AUCTION_ID
            a_int[1, ia] = ts
            a_int[2, ia] = ts + 1 + np.int64(_uniform(key, 1) * 2 * horizon_ms)
            a_int[3, ia] = seller + FIRST_PERSON_ID
            a_int[4, ia] = FIRST_CATEGORY_ID + _below(key, 4, NUM_CATEGORIES)
            a_int[5, ia] = initial
            a_int[6, ia] = initial + _price(key, 6)
            a_int[7, ia] = item
            a_int[8, ia] = desc
            a_int[9, ia] = _extra_length(key, 9, 8 + item + desc + 40, AVG_AUCTION_BYTES)
            ia += 1
        else:
            last = _last_auction(e)
            if _below(key, 1, P_HOT_AUCTION) > 0:
                auction = last // HOT_AUCTION_RATIO * HOT_AUCTION_RATIO
            else:  # nextBase0AuctionId: one in flight, or a few ids ahead
                low = max(last - NUM_IN_FLIGHT_AUCTIONS, 0)
                auction = low + _below(key, 2, last - low + 1 + ID_LEAD)
            if _below(key, 3, P_HOT_BIDDER) > 0:
                bidder = _last_person(e) // HOT_BIDDER_RATIO * HOT_BIDDER_RATIO + 1
            else:
                bidder = _recent_person(e, key, 4)
            b_int[0, ib] = auction + FIRST_AUCTION_ID
            b_int[1, ib] = bidder + FIRST_PERSON_ID
            b_int[2, ib] = _price(key, 5)
            b_int[3, ib] = ts
            if _below(key, 6, HOT_CHANNELS_RATIO) > 0:
                b_int[4, ib] = _below(key, 7, N_HOT_CHANNELS)
            else:
                b_int[4, ib] = N_HOT_CHANNELS + _below(key, 7, NUM_CHANNELS)
            b_int[5, ib] = _extra_length(key, 8, 32, AVG_BID_BYTES)
            ib += 1
    return p_int, p_card, a_int, b_int
