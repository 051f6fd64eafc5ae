"""The SQL corpus: queries ``lj.sql`` compiles, each with DuckDB's batch equivalent over the same events.

Each case is ``(streaming SQL, DuckDB SQL)``; ``None`` for DuckDB means the same text. Every query reads
``bids`` (``ts`` int64 milliseconds, unique, out of order; ``auction`` int64 with nulls, zipf-skewed;
``price`` float64 with nulls; ``ch`` string with nulls, dictionary-encoded in half the runs). ``EXPRESSIONS`` and ``PREDICATES`` are completed into
``SELECT ts, <e> AS x FROM bids`` and ``SELECT ts, auction, price, ch FROM bids WHERE <p>``.
"""

from __future__ import annotations


def tumble(size: int) -> str:
    return f"TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '{size}' MILLISECOND))"


def hop(slide: int, size: int) -> str:
    return f"TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '{slide}' MILLISECOND, INTERVAL '{size}' MILLISECOND))"


def cumulate(step: int, size: int) -> str:
    return (f"TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '{step}' MILLISECOND, "
            f"INTERVAL '{size}' MILLISECOND))")


def duck_tumble(size: int) -> str:
    """DuckDB: the rows with their tumbling window's bounds (``ws``, ``we``)."""
    return f"(SELECT *, ts // {size} * {size} AS ws, ts // {size} * {size} + {size} AS we FROM bids)"


def duck_hop(slide: int, size: int) -> str:
    """DuckDB: each row once per hopping window it belongs to (``ws``, ``we``)."""
    k = size // slide
    return (f"(SELECT *, ws + {size} AS we FROM (SELECT *, unnest(range(ts // {slide} - {k - 1}, ts // {slide} + 1))"
            f" * {slide} AS ws FROM bids))")


def duck_cumulate(step: int, size: int) -> str:
    """DuckDB: each row once per cumulating window it belongs to: ``[ws, ws + e * step)`` with ``ws`` its period."""
    return (f"(SELECT *, ws + e * {step} AS we FROM (SELECT *, ts // {size} * {size} AS ws, "
            f"unnest(range(1, {size // step + 1})) AS e FROM bids) WHERE ts < ws + e * {step})")


#: Select-list expressions (nulls in, SQL's null rules out).
EXPRESSIONS = [
    ("price * 2 + 1", None), ("price - 10.5", None), ("price / 4", None), ("auction + 1", None),
    ("auction * 3 - 2", None), ("-price", None), ("ABS(price - 50)", None), ("FLOOR(price)", None),
    ("CEIL(price)", None), ("ROUND(price)", None), ("SQRT(price)", None), ("LN(price + 1)", None),
    ("EXP(price / 100)", None), ("POWER(price, 2)", None), ("MOD(auction, 7)", None),
    ("GREATEST(price, 25)", "CASE WHEN price IS NULL THEN NULL ELSE greatest(price, 25) END"),
    ("LEAST(price, 25)", "CASE WHEN price IS NULL THEN NULL ELSE least(price, 25) END"),
    ("SUBSTRING(ch, 2, 2)", None), ("SUBSTRING(ch FROM 1 FOR 1)", "substring(ch, 1, 1)"), ("SUBSTR(ch, 2)", None),
    ("GREATEST(auction, 3, 5)", "CASE WHEN auction IS NULL THEN NULL ELSE greatest(auction, 3, 5) END"),
    ("LEAST(auction, 10)", "CASE WHEN auction IS NULL THEN NULL ELSE least(auction, 10) END"),
    ("CAST(auction AS DOUBLE)", None), ("CAST(price AS BIGINT)", "CAST(trunc(price) AS BIGINT)"),
    ("price BETWEEN 20 AND 40", None), ("auction IN (1, 2, 3)", None), ("price > 50", None),
    ("price >= 50 AND auction < 5", None), ("NOT (price > 50)", None), ("price > 50 OR auction = 1", None),
    ("COALESCE(price, -1)", None), ("COALESCE(price, auction, 0)", None), ("NULLIF(auction, 1)", None),
    ("price IS NULL", None), ("auction IS NOT NULL", None), ("CASE WHEN price > 50 THEN 1 ELSE 0 END", None),
    ("CASE WHEN price > 66 THEN 'high' WHEN price > 33 THEN 'mid' END", None),
    ("CASE WHEN auction = 1 THEN price ELSE -price END", None), ("UPPER(ch)", None), ("LOWER(UPPER(ch))", None),
    ("ch || '!'", None), ("ch = 'web'", None), ("ch IN ('web', 'api')", None), ("ch LIKE 'a%'", None),
    ("ch LIKE '%p%'", None), ("ch <> 'app'", None), ("CONCAT(ch, '-', ch)", "ch || '-' || ch"),
    ("CASE WHEN ch = 'web' THEN auction END", None), ("ts + INTERVAL '1' SECOND", "ts + 1000"),
    ("ts - INTERVAL '5' MINUTE", "ts - 300000"), ("SECOND(ts)", "(ts // 1000) % 60"),
    ("EXTRACT(SECOND FROM ts)", "(ts // 1000) % 60"), ("MINUTE(ts)", "(ts // 60000) % 60"), ("MOD(ts, 1000)", None),
    ("price * auction", None), ("(price + auction) / 2", None), ("ABS(auction - 30) + MOD(auction, 4)", None),
    ("CAST(auction AS DOUBLE) / 3", None), ("price > auction", None), ("price = 50", None),
    ("ts > 5000 AND price < 20", None), ("NOT (auction IN (1, 2))", None), ("COALESCE(NULLIF(auction, 1), 0)", None),
    ("CASE WHEN price IS NULL THEN 'none' ELSE 'some' END", None), ("YEAR(ts)", "year(epoch_ms(ts))"),
    ("DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm:ss')", "strftime(epoch_ms(ts), '%Y-%m-%d %H:%M:%S')"),
    ("ROUND(price / 3)", None), ("FLOOR(price / 10) * 10", None),
]

#: WHERE conditions.
PREDICATES = [
    ("price > 50", None), ("price <= 20", None), ("price BETWEEN 10 AND 30", None),
    ("price NOT BETWEEN 10 AND 90", None), ("auction = 1", None), ("auction <> 1", None),
    ("auction IN (1, 2, 3)", None), ("NOT auction IN (1, 2)", None), ("auction IS NULL", None),
    ("price IS NOT NULL AND auction IS NOT NULL", None), ("price > 50 OR auction = 2", None),
    ("NOT (price > 50)", None), ("ch = 'web'", None), ("ch <> 'web'", None), ("ch IN ('app', 'api')", None),
    ("ch LIKE 'w%'", None), ("ch NOT LIKE 'w%'", None), ("UPPER(ch) = 'API'", None), ("MOD(auction, 2) = 0", None),
    ("ABS(price - 50) < 10", None), ("price * 2 > auction * 10", None), ("ts > 5000 AND ts < 15000", None),
    ("MOD(ts, 3) = 0", None), ("COALESCE(price, 0) > 40", None),
    ("CASE WHEN ch = 'web' THEN price > 50 ELSE price < 50 END", None),
    ("(price > 80 OR price < 20) AND auction < 10", None), ("price > 50 AND NOT ch = 'web'", None),
    ("auction BETWEEN 2 AND 5", None), ("price IN (10.5, 20.5, 30.5)", None), ("NULLIF(auction, 1) IS NULL", None),
    ("auction + 1 > 3", None), ("ts - INTERVAL '1' SECOND > 1000", "ts - 1000 > 1000"),
    ("GREATEST(price, 50) = 50", "price IS NOT NULL AND greatest(price, 50) = 50"), ("SQRT(price) > 5", None),
    ("FLOOR(price) = CEIL(price)", None), ("price > 95 OR ch = 'api' AND auction = 1", None),
    ("NOT (ch = 'web' OR ch = 'app')", None), ("ch || 'x' = 'webx'", None), ("LOWER(ch) IN ('web')", None),
    ("CAST(price AS BIGINT) = 42", "CAST(trunc(price) AS BIGINT) = 42"),
]

#: Window aggregates (append-only results).
WINDOWS = [
    (f"SELECT window_start, window_end, auction, COUNT(*) AS n, SUM(price) AS s FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, we AS window_end, auction, count(*) AS n, sum(price) AS s FROM {duck_tumble(1000)} "
     "GROUP BY ALL"),
    (f"SELECT window_start, COUNT(*) AS n, AVG(price) AS a, MIN(price) AS lo, MAX(price) AS hi FROM {tumble(2000)} "
     "GROUP BY window_start, window_end",
     f"SELECT ws AS window_start, count(*) AS n, avg(price) AS a, min(price) AS lo, max(price) AS hi FROM "
     f"{duck_tumble(2000)} GROUP BY ws"),
    (f"SELECT window_start, ch, COUNT(price) AS c FROM {tumble(500)} GROUP BY window_start, window_end, ch",
     f"SELECT ws AS window_start, ch, count(price) AS c FROM {duck_tumble(500)} GROUP BY ws, ch"),
    (f"SELECT window_start, auction, COUNT(*) AS n FROM {tumble(1000)} GROUP BY window_start, window_end, auction "
     "HAVING COUNT(*) > 3",
     f"SELECT ws AS window_start, auction, count(*) AS n FROM {duck_tumble(1000)} GROUP BY ws, auction "
     "HAVING count(*) > 3"),
    (f"SELECT window_start, auction, SUM(price * 2) AS s2, MAX(price) - MIN(price) AS spread FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, sum(price * 2) AS s2, max(price) - min(price) AS spread FROM "
     f"{duck_tumble(1000)} GROUP BY ws, auction"),
    (f"SELECT window_start, auction, COUNT(*) FILTER (WHERE price > 50) AS hi FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, count(*) FILTER (WHERE price > 50) AS hi FROM {duck_tumble(1000)} "
     "GROUP BY ws, auction"),
    (f"SELECT window_start, ch, auction, COUNT(*) AS n FROM {tumble(1000)} GROUP BY window_start, window_end, ch, "
     "auction",
     f"SELECT ws AS window_start, ch, auction, count(*) AS n FROM {duck_tumble(1000)} GROUP BY ws, ch, auction"),
    (f"SELECT window_start, window_end, auction, COUNT(*) AS n FROM {hop(500, 2000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, we AS window_end, auction, count(*) AS n FROM {duck_hop(500, 2000)} "
     "GROUP BY ws, we, auction"),
    (f"SELECT window_start, SUM(price) AS s FROM {hop(1000, 3000)} GROUP BY window_start, window_end",
     f"SELECT ws AS window_start, sum(price) AS s FROM {duck_hop(1000, 3000)} GROUP BY ws"),
    (f"SELECT window_end, ch, AVG(price) AS a FROM {hop(250, 1000)} GROUP BY window_start, window_end, ch",
     f"SELECT we AS window_end, ch, avg(price) AS a FROM {duck_hop(250, 1000)} GROUP BY ws, we, ch"),
    (f"SELECT window_start, auction, MAX(price) AS hi FROM {tumble(1000)} WHERE price > 30 "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, max(price) AS hi FROM {duck_tumble(1000)} WHERE price > 30 "
     "GROUP BY ws, auction"),
    (f"SELECT window_start, MOD(auction, 3) AS m, COUNT(*) AS n FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, MOD(auction, 3)",
     f"SELECT ws AS window_start, auction % 3 AS m, count(*) AS n FROM {duck_tumble(1000)} GROUP BY ws, m"),
    ("SELECT auction, COUNT(*) AS n, TUMBLE_START(ts, INTERVAL '1' SECOND) AS s FROM bids "
     "GROUP BY auction, TUMBLE(ts, INTERVAL '1' SECOND)",
     f"SELECT auction, count(*) AS n, ws AS s FROM {duck_tumble(1000)} GROUP BY auction, ws"),
    ("SELECT ch, SUM(price) AS s, HOP_END(ts, INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND) AS e FROM bids "
     "GROUP BY ch, HOP(ts, INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND)",
     f"SELECT ch, sum(price) AS s, we AS e FROM {duck_hop(500, 1000)} GROUP BY ch, we"),
    (f"SELECT window_end, COUNT(*) AS n FROM {tumble(700)} GROUP BY window_start, window_end",
     f"SELECT we AS window_end, count(*) AS n FROM {duck_tumble(700)} GROUP BY we"),
    (f"SELECT window_start, auction, SUM(price) FILTER (WHERE ch = 'web') AS web FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, sum(price) FILTER (WHERE ch = 'web') AS web FROM {duck_tumble(1000)} "
     "GROUP BY ws, auction"),
    (f"SELECT window_start, AVG(price) * 2 AS a2, COUNT(*) + 1 AS n1 FROM {tumble(1000)} "
     "GROUP BY window_start, window_end",
     f"SELECT ws AS window_start, avg(price) * 2 AS a2, count(*) + 1 AS n1 FROM {duck_tumble(1000)} GROUP BY ws"),
    (f"SELECT window_start, auction, MAX(price) AS hi FROM {tumble(3000)} GROUP BY window_start, window_end, auction "
     "HAVING MAX(price) > 90 AND COUNT(*) >= 2",
     f"SELECT ws AS window_start, auction, max(price) AS hi FROM {duck_tumble(3000)} GROUP BY ws, auction "
     "HAVING max(price) > 90 AND count(*) >= 2"),
    (f"SELECT s, MAX(n) AS top FROM (SELECT window_start AS s, window_end AS e, auction, COUNT(*) AS n FROM "
     f"{tumble(500)} GROUP BY window_start, window_end, auction) GROUP BY s, e",
     f"SELECT ws AS s, max(n) AS top FROM (SELECT ws, auction, count(*) AS n FROM {duck_tumble(500)} "
     "GROUP BY ws, auction) GROUP BY ws"),
    (f"SELECT window_start, auction, MIN(ts) AS first_ts, MAX(ts) AS last_ts FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, min(ts) AS first_ts, max(ts) AS last_ts FROM {duck_tumble(1000)} "
     "GROUP BY ws, auction"),
    (f"SELECT window_start, auction, COUNT(*) AS n FROM {hop(1000, 2000)} GROUP BY window_start, window_end, auction "
     "HAVING COUNT(*) > 5",
     f"SELECT ws AS window_start, auction, count(*) AS n FROM {duck_hop(1000, 2000)} GROUP BY ws, auction "
     "HAVING count(*) > 5"),
    (f"SELECT window_start, window_end, auction, COUNT(*) AS n, SUM(price) AS s FROM {cumulate(500, 2000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, we AS window_end, auction, count(*) AS n, sum(price) AS s FROM "
     f"{duck_cumulate(500, 2000)} GROUP BY ALL"),
    (f"SELECT window_start, window_end, COUNT(*) AS n, AVG(price) AS a FROM {cumulate(250, 1000)} "
     "GROUP BY window_start, window_end",
     f"SELECT ws AS window_start, we AS window_end, count(*) AS n, avg(price) AS a FROM {duck_cumulate(250, 1000)} "
     "GROUP BY ALL"),
    (f"SELECT window_end, ch, MAX(price) AS hi, COUNT(*) AS n FROM {cumulate(1000, 3000)} "
     "GROUP BY window_start, window_end, ch HAVING COUNT(*) > 2",
     f"SELECT we AS window_end, ch, max(price) AS hi, count(*) AS n FROM {duck_cumulate(1000, 3000)} "
     "GROUP BY ws, we, ch HAVING count(*) > 2"),
    # strings: MIN/MAX compare their bytes (nulls skipped; a window of null strings gives null)
    (f"SELECT window_start, auction, MIN(ch) AS lo, MAX(ch) AS hi, COUNT(ch) AS c FROM {tumble(1000)} "
     "GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, min(ch) AS lo, max(ch) AS hi, count(ch) AS c FROM {duck_tumble(1000)} "
     "GROUP BY ws, auction"),
    (f"SELECT window_end, MAX(ch) AS hi, MIN(ch) AS lo FROM {hop(250, 1000)} WHERE price > 20 "
     "GROUP BY window_start, window_end",
     f"SELECT we AS window_end, max(ch) AS hi, min(ch) AS lo FROM {duck_hop(250, 1000)} WHERE price > 20 "
     "GROUP BY ws, we"),
    # COUNT(DISTINCT): floats (NaN one value), strings, integers; nulls skipped
    (f"SELECT window_start, auction, COUNT(DISTINCT price) AS dp, COUNT(DISTINCT ch) AS dc, COUNT(*) AS n "
     f"FROM {tumble(1000)} GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, count(DISTINCT price) AS dp, count(DISTINCT ch) AS dc, count(*) AS n "
     f"FROM {duck_tumble(1000)} GROUP BY ws, auction"),
    (f"SELECT window_end, COUNT(DISTINCT auction) AS da, COUNT(DISTINCT ch) FILTER (WHERE price > 50) AS dc "
     f"FROM {hop(250, 1000)} GROUP BY window_start, window_end",
     f"SELECT we AS window_end, count(DISTINCT auction) AS da, count(DISTINCT ch) FILTER (WHERE price > 50) AS dc "
     f"FROM {duck_hop(250, 1000)} GROUP BY ws, we"),
    (f"SELECT window_start, window_end, ch, COUNT(DISTINCT auction) AS da FROM {cumulate(500, 2000)} "
     "GROUP BY window_start, window_end, ch",
     f"SELECT ws AS window_start, we AS window_end, ch, count(DISTINCT auction) AS da FROM "
     f"{duck_cumulate(500, 2000)} GROUP BY ALL"),
]

#: Non-windowed GROUP BY: updating results (a changelog), compared once applied.
UPDATING = [
    ("SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction", None),
    ("SELECT ch, SUM(price) AS s, AVG(price) AS a FROM bids GROUP BY ch", None),
    ("SELECT auction, MIN(price) AS lo, MAX(price) AS hi FROM bids GROUP BY auction", None),
    ("SELECT auction, ch, COUNT(price) AS c FROM bids GROUP BY auction, ch", None),
    ("SELECT auction, COUNT(DISTINCT MOD(ts, 5)) AS d FROM bids GROUP BY auction", None),
    ("SELECT MOD(auction, 4) AS m, COUNT(*) AS n FROM bids GROUP BY MOD(auction, 4)", None),
    ("SELECT ch, COUNT(*) AS n FROM bids GROUP BY ch HAVING COUNT(*) > 100", None),
    ("SELECT auction, SUM(price) FILTER (WHERE price > 50) AS s FROM bids GROUP BY auction", None),
    ("SELECT auction, MAX(price) AS hi FROM bids WHERE price < 50 GROUP BY auction", None),
    ("SELECT auction, AVG(price) * 2 + 1 AS a FROM bids GROUP BY auction", None),
    ("SELECT UPPER(ch) AS c, COUNT(*) AS n FROM bids GROUP BY UPPER(ch)", None),
    ("SELECT auction, COUNT(*) FILTER (WHERE ch = 'web') AS web, COUNT(*) FILTER (WHERE ch <> 'web') AS other "
     "FROM bids GROUP BY auction", None),
    ("SELECT auction, COUNT(DISTINCT auction) AS one, SUM(auction) AS s FROM bids WHERE auction < 5 GROUP BY auction",
     None),
    ("SELECT auction, MIN(ch) AS lo, MAX(ch) AS hi, COUNT(ch) AS c, COUNT(DISTINCT ch) AS d FROM bids "
     "GROUP BY auction", None),
    ("SELECT MOD(auction, 3) AS m, MAX(UPPER(ch) || '-' || CAST(MOD(auction, 7) AS VARCHAR)) AS top, "
     "MIN(ch) FILTER (WHERE price > 50) AS lo FROM bids GROUP BY MOD(auction, 3)", None),
]

#: Top-N and deduplication (updating, or per window).
RANKED = [
    ("SELECT auction, price, ts, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, ts) "
     "AS rn FROM bids WHERE price IS NOT NULL) WHERE rn <= 3", None),
    ("SELECT ch, price, ts, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY ch ORDER BY price, ts) AS rn "
     "FROM bids WHERE price IS NOT NULL) WHERE rn <= 2", None),
    ("SELECT auction, price, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY ts DESC) AS rn "
     "FROM bids) WHERE rn = 1", None),
    ("SELECT auction, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY ts) AS rn FROM bids) "
     "WHERE rn <= 1", None),
    (f"SELECT window_start, auction, price FROM (SELECT *, RANK() OVER (PARTITION BY window_start, window_end "
     f"ORDER BY price DESC) AS rn FROM {tumble(1000)} WHERE price IS NOT NULL) WHERE rn <= 2",
     f"SELECT ws AS window_start, auction, price FROM (SELECT *, rank() OVER (PARTITION BY ws ORDER BY price DESC) "
     f"AS rn FROM {duck_tumble(1000)} WHERE price IS NOT NULL) WHERE rn <= 2"),
    (f"SELECT window_start, auction, price FROM (SELECT *, RANK() OVER (PARTITION BY window_start, window_end, "
     f"auction ORDER BY price DESC) AS rn FROM {tumble(2000)} WHERE price IS NOT NULL) WHERE rn <= 1",
     f"SELECT ws AS window_start, auction, price FROM (SELECT *, rank() OVER (PARTITION BY ws, auction ORDER BY "
     f"price DESC) AS rn FROM {duck_tumble(2000)} WHERE price IS NOT NULL) WHERE rn <= 1"),
]

#: Joins of the stream with itself (interval, regular, outer, semi and anti, window joins, joins under GROUP BY).
JOINS = [
    ("SELECT a.ts, b.ts AS bts, a.auction FROM bids a JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts - INTERVAL '20' MILLISECOND AND a.ts",
     "SELECT a.ts, b.ts AS bts, a.auction FROM bids a JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts - 20 AND a.ts"),
    ("SELECT a.ts, b.ts AS bts FROM bids a JOIN bids b ON a.auction = b.auction AND b.ts BETWEEN a.ts - "
     "INTERVAL '40' MILLISECOND AND a.ts + INTERVAL '40' MILLISECOND WHERE a.price > b.price",
     "SELECT a.ts, b.ts AS bts FROM bids a JOIN bids b ON a.auction = b.auction AND b.ts BETWEEN a.ts - 40 AND "
     "a.ts + 40 WHERE a.price > b.price"),
    ("SELECT a.ts, b.price FROM bids a, bids b WHERE a.auction = b.auction AND b.ts >= a.ts "
     "AND b.ts < a.ts + INTERVAL '30' MILLISECOND",
     "SELECT a.ts, b.price FROM bids a, bids b WHERE a.auction = b.auction AND b.ts >= a.ts AND b.ts < a.ts + 30"),
    ("SELECT a.ts, a.auction, b.ts AS bts FROM bids a LEFT JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts + INTERVAL '1' MILLISECOND AND a.ts + INTERVAL '25' MILLISECOND",
     "SELECT a.ts, a.auction, b.ts AS bts FROM bids a LEFT JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts + 1 AND a.ts + 25"),
    ("SELECT a.ts, b.ts AS bts FROM bids a JOIN bids b ON a.auction = b.auction AND a.ch = b.ch "
     "AND b.ts BETWEEN a.ts - INTERVAL '60' MILLISECOND AND a.ts",
     "SELECT a.ts, b.ts AS bts FROM bids a JOIN bids b ON a.auction = b.auction AND a.ch = b.ch "
     "AND b.ts BETWEEN a.ts - 60 AND a.ts"),
    ("SELECT a.auction, COUNT(*) AS pairs FROM bids a JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts - INTERVAL '20' MILLISECOND AND a.ts GROUP BY a.auction",
     "SELECT a.auction, count(*) AS pairs FROM bids a JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts - 20 AND a.ts GROUP BY a.auction"),
    ("SELECT a.ts, h.ts AS hts FROM bids a JOIN (SELECT ts, auction FROM bids WHERE price > 50) h "
     "ON a.auction = h.auction AND h.ts BETWEEN a.ts - INTERVAL '50' MILLISECOND AND a.ts",
     "SELECT a.ts, h.ts AS hts FROM bids a JOIN (SELECT ts, auction FROM bids WHERE price > 50) h "
     "ON a.auction = h.auction AND h.ts BETWEEN a.ts - 50 AND a.ts"),
    ("SELECT ts, auction FROM bids a WHERE EXISTS (SELECT * FROM bids b WHERE b.auction = a.auction "
     "AND b.ts BETWEEN a.ts - INTERVAL '50' MILLISECOND AND a.ts - INTERVAL '1' MILLISECOND)",
     "SELECT ts, auction FROM bids a WHERE EXISTS (SELECT * FROM bids b WHERE b.auction = a.auction "
     "AND b.ts BETWEEN a.ts - 50 AND a.ts - 1)"),
    ("SELECT ts, auction FROM bids a WHERE NOT EXISTS (SELECT * FROM bids b WHERE b.auction = a.auction "
     "AND b.ts BETWEEN a.ts + INTERVAL '1' MILLISECOND AND a.ts + INTERVAL '40' MILLISECOND)",
     "SELECT ts, auction FROM bids a WHERE NOT EXISTS (SELECT * FROM bids b WHERE b.auction = a.auction "
     "AND b.ts BETWEEN a.ts + 1 AND a.ts + 40)"),
    ("SELECT ts, auction FROM bids WHERE auction IN (SELECT auction FROM bids WHERE price > 95)", None),
    ("SELECT a.ts, b.ts AS bts FROM bids a FULL JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts + INTERVAL '1' MILLISECOND AND a.ts + INTERVAL '15' MILLISECOND",
     "SELECT a.ts, b.ts AS bts FROM bids a FULL JOIN bids b ON a.auction = b.auction "
     "AND b.ts BETWEEN a.ts + 1 AND a.ts + 15"),
    (f"SELECT L.ts, R.ts AS rts, L.window_start FROM (SELECT * FROM {tumble(500)}) L JOIN (SELECT * FROM "
     f"{tumble(500)} WHERE price > 90) R ON L.auction = R.auction AND L.window_start = R.window_start "
     "AND L.window_end = R.window_end",
     f"SELECT L.ts, R.ts AS rts, L.ws AS window_start FROM {duck_tumble(500)} L JOIN (SELECT * FROM "
     f"{duck_tumble(500)} WHERE price > 90) R ON L.auction = R.auction AND L.ws = R.ws"),
]

JOINS += [
    ("SELECT a.ts, b.ts AS bts, c.ts AS cts, a.auction FROM bids a JOIN bids b ON a.auction = b.auction AND b.ts "
     "BETWEEN a.ts - INTERVAL '30' MILLISECOND AND a.ts JOIN bids c ON b.auction = c.auction AND c.ts BETWEEN "
     "b.ts - INTERVAL '30' MILLISECOND AND b.ts WHERE c.price > 20",
     "SELECT a.ts, b.ts AS bts, c.ts AS cts, a.auction FROM bids a JOIN bids b ON a.auction = b.auction AND b.ts "
     "BETWEEN a.ts - 30 AND a.ts JOIN bids c ON b.auction = c.auction AND c.ts BETWEEN b.ts - 30 AND b.ts "
     "WHERE c.price > 20"),
    ("SELECT a.ts, c.ts AS cts FROM bids a, bids b, bids c WHERE a.auction = b.auction AND b.auction = c.auction "
     "AND b.ts >= a.ts AND b.ts <= a.ts + INTERVAL '20' MILLISECOND AND c.ts >= a.ts "
     "AND c.ts <= a.ts + INTERVAL '20' MILLISECOND",
     "SELECT a.ts, c.ts AS cts FROM bids a, bids b, bids c WHERE a.auction = b.auction AND b.auction = c.auction "
     "AND b.ts >= a.ts AND b.ts <= a.ts + 20 AND c.ts >= a.ts AND c.ts <= a.ts + 20"),
]
JOINS += [
    (f"SELECT L.ts, R.ts AS rts, L.window_start FROM (SELECT * FROM {tumble(500)}) L LEFT JOIN (SELECT * FROM "
     f"{tumble(500)} WHERE price > 90) R ON L.auction = R.auction AND L.window_start = R.window_start "
     "AND L.window_end = R.window_end",
     f"SELECT L.ts, R.ts AS rts, L.ws AS window_start FROM {duck_tumble(500)} L LEFT JOIN (SELECT * FROM "
     f"{duck_tumble(500)} WHERE price > 90) R ON L.auction = R.auction AND L.ws = R.ws"),
    (f"SELECT L.ts, R.ts AS rts, L.window_start, R.window_end AS rwe FROM (SELECT * FROM {tumble(300)} WHERE "
     f"price < 5) L FULL JOIN (SELECT * FROM {tumble(300)} WHERE price > 95) R ON L.auction = R.auction "
     "AND L.window_start = R.window_start AND L.window_end = R.window_end",
     f"SELECT L.ts, R.ts AS rts, L.ws AS window_start, R.we AS rwe FROM (SELECT * FROM {duck_tumble(300)} WHERE "
     f"price < 5) L FULL JOIN (SELECT * FROM {duck_tumble(300)} WHERE price > 95) R ON L.auction = R.auction "
     "AND L.ws = R.ws"),
]

#: Queries of queries: WITH, UNION ALL, SELECT DISTINCT; windows with an offset; variances; a global aggregate.
COMPOSED = [
    ("rows", "SELECT ts, auction FROM bids WHERE price > 90 UNION ALL SELECT ts, auction FROM bids WHERE price < 5 "
             "UNION ALL SELECT ts, auction FROM bids WHERE ch = 'web' AND price < 20", None),
    ("rows", "WITH hi AS (SELECT ts, auction, price FROM bids WHERE price > 50), c AS (SELECT * FROM hi WHERE "
             "auction < 10) SELECT window_start, COUNT(*) AS n, MAX(price) AS top FROM TABLE(TUMBLE(TABLE c, "
             "DESCRIPTOR(ts), INTERVAL '1000' MILLISECOND)) GROUP BY window_start, window_end",
     "WITH c AS (SELECT * FROM bids WHERE price > 50 AND auction < 10) SELECT ts // 1000 * 1000 AS window_start, "
     "count(*) AS n, max(price) AS top FROM c GROUP BY 1"),
    ("rows", f"SELECT DISTINCT window_start, window_end, ch FROM {tumble(1000)}",
     f"SELECT DISTINCT ws AS window_start, we AS window_end, ch FROM {duck_tumble(1000)}"),
    ("rows", "SELECT window_start, auction, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), "
             "INTERVAL '1000' MILLISECOND, INTERVAL '300' MILLISECOND)) GROUP BY window_start, window_end, auction",
     "SELECT floor((ts - 300) / 1000)::BIGINT * 1000 + 300 AS window_start, auction, count(*) AS n FROM bids "
     "GROUP BY ALL"),
    ("rows", "SELECT window_end, COUNT(*) AS n FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, "
             "INTERVAL '1000' MILLISECOND, INTERVAL '200' MILLISECOND)) GROUP BY window_start, window_end",
     "SELECT ws + 1000 AS window_end, count(*) AS n FROM (SELECT *, unnest(range(floor((ts - 200) / 500)::BIGINT - 1, "
     "floor((ts - 200) / 500)::BIGINT + 1)) * 500 + 200 AS ws FROM bids) GROUP BY ws"),
    ("rows", f"SELECT window_start, auction, STDDEV_POP(price) AS sp, VAR_SAMP(price) AS vs, STDDEV(auction) AS sa "
             f"FROM {hop(500, 1000)} GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, stddev_pop(price) AS sp, var_samp(price) AS vs, stddev_samp(auction) AS sa "
     f"FROM {duck_hop(500, 1000)} GROUP BY ws, auction"),
    ("rows", f"SELECT window_start, auction, FIRST_VALUE(price) AS f, LAST_VALUE(ch) AS l, "
             f"APPROX_COUNT_DISTINCT(ch) AS d FROM {tumble(1000)} GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, arg_min(price, ts) FILTER (WHERE price IS NOT NULL) AS f, "
     f"arg_max(ch, ts) FILTER (WHERE ch IS NOT NULL) AS l, count(DISTINCT ch) AS d "
     f"FROM {duck_tumble(1000)} GROUP BY ws, auction"),
    ("rows", "SELECT window_start, window_end, auction, COUNT(*) AS n, COUNT(DISTINCT ch) AS dc, "
             "VAR_POP(price) AS vp FROM TABLE(SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(ts), "
             "INTERVAL '40' MILLISECOND)) GROUP BY window_start, window_end, auction",
     # sessions: a row at most the gap after the one before (Flink's touching windows merge)
     "WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY auction ORDER BY ts) AS d FROM bids), "
     "s AS (SELECT *, sum(CASE WHEN d <= 40 THEN 0 ELSE 1 END) OVER (PARTITION BY auction ORDER BY ts "
     "ROWS UNBOUNDED PRECEDING) AS sid FROM g) SELECT min(ts) AS window_start, max(ts) + 40 AS window_end, "
     "auction, count(*) AS n, count(DISTINCT ch) AS dc, var_pop(price) AS vp FROM s GROUP BY auction, sid"),
    ("changelog", "SELECT DISTINCT auction, ch FROM bids", None),
    ("changelog", "SELECT COUNT(*) AS n, SUM(price) AS s, COUNT(DISTINCT ch) AS d FROM bids", None),
]

#: Expressions that look at nulls or strings over the results of windows, aggregates and joins (Arrow
#: functions of those rows, run between steps); variances of updating results (expressions over sums).
AFTER_OPERATORS = [
    ("changelog", "SELECT auction, VAR_POP(price) AS vp, VAR_SAMP(price) AS vs, STDDEV_POP(price) AS sp, "
                  "STDDEV(auction) AS sa, COUNT(*) AS n FROM bids GROUP BY auction", None),
    ("changelog", "SELECT ch, STDDEV_SAMP(price) FILTER (WHERE auction < 5) AS s, VARIANCE(price) AS v FROM bids "
                  "GROUP BY ch HAVING VAR_POP(price) > 10", None),
    ("changelog", "SELECT STDDEV_POP(price) AS s, GREATEST(MAX(ch), 'b') AS g FROM bids",
     "SELECT stddev_pop(price) AS s, CASE WHEN max(ch) IS NULL THEN NULL ELSE greatest(max(ch), 'b') END AS g "
     "FROM bids"),
    ("rows", f"SELECT window_start, auction, CASE WHEN COUNT(*) > 3 THEN 'busy' ELSE 'quiet' END AS lvl, "
             f"COALESCE(MAX(price), -1) AS m, NULLIF(COUNT(*), 1) AS n1, MIN(price) IS NULL AS none "
             f"FROM {tumble(1000)} GROUP BY window_start, window_end, auction",
     f"SELECT ws AS window_start, auction, CASE WHEN count(*) > 3 THEN 'busy' ELSE 'quiet' END AS lvl, "
     f"COALESCE(max(price), -1) AS m, NULLIF(count(*), 1) AS n1, min(price) IS NULL AS none "
     f"FROM {duck_tumble(1000)} GROUP BY ws, auction"),
    ("rows", f"SELECT window_start, auction, COUNT(*) AS n FROM {hop(500, 1000)} GROUP BY window_start, window_end, "
             f"auction HAVING MAX(price) IS NULL OR COALESCE(MIN(price), 0) > 30",
     f"SELECT ws AS window_start, auction, count(*) AS n FROM {duck_hop(500, 1000)} GROUP BY ws, auction "
     f"HAVING max(price) IS NULL OR COALESCE(min(price), 0) > 30"),
    ("changelog", "SELECT auction, COALESCE(MAX(price), 0) AS m, CASE WHEN COUNT(*) > 10 THEN 'many' END AS c "
                  "FROM bids GROUP BY auction", None),
    ("rows", f"SELECT window_start, UPPER(l) AS u, l || '!' AS e FROM (SELECT window_start, LAST_VALUE(ch) AS l "
             f"FROM {tumble(1000)} GROUP BY window_start, window_end)",
     f"SELECT ws AS window_start, upper(l) AS u, l || '!' AS e FROM (SELECT ws, arg_max(ch, ts) FILTER "
     f"(WHERE ch IS NOT NULL) AS l FROM {duck_tumble(1000)} GROUP BY ws)"),
    ("rows", "SELECT a.ts, COALESCE(b.ts, -1) AS bts, CASE WHEN b.price IS NULL THEN 'none' ELSE 'hit' END AS h "
             "FROM bids a LEFT JOIN bids b ON a.auction = b.auction "
             "AND b.ts BETWEEN a.ts + INTERVAL '1' MILLISECOND AND a.ts + INTERVAL '25' MILLISECOND",
     "SELECT a.ts, COALESCE(b.ts, -1) AS bts, CASE WHEN b.price IS NULL THEN 'none' ELSE 'hit' END AS h "
     "FROM bids a LEFT JOIN bids b ON a.auction = b.auction AND b.ts BETWEEN a.ts + 1 AND a.ts + 25"),
    ("rows", f"WITH w AS (SELECT window_start, window_end, auction, CASE WHEN COUNT(*) > 2 THEN 1 END AS busy "
             f"FROM {tumble(100)} GROUP BY window_start, window_end, auction) "
             "SELECT window_start, COUNT(busy) AS nb, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE w, "
             "DESCRIPTOR(window_start), INTERVAL '1000' MILLISECOND)) GROUP BY window_start, window_end",
     f"WITH w AS (SELECT ws, auction, CASE WHEN count(*) > 2 THEN 1 END AS busy FROM {duck_tumble(100)} "
     "GROUP BY ws, auction) SELECT ws // 1000 * 1000 AS window_start, count(busy) AS nb, count(*) AS n FROM w "
     "GROUP BY 1"),
]

#: OVER aggregates: each row with an aggregate over its key's rows up to it (RANGE: with its peers).
OVER_AGGREGATES = [
    ("rows", "SELECT ts, auction, price, COUNT(*) OVER (PARTITION BY auction ORDER BY ts) AS n, "
             "SUM(price) OVER (PARTITION BY auction ORDER BY ts) AS s FROM bids", None),
    ("rows", "SELECT ts, ch, AVG(price) OVER (PARTITION BY ch ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) "
             "AS a, MAX(auction) OVER (PARTITION BY ch ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS m "
             "FROM bids", None),
    ("rows", "SELECT ts, price - AVG(price) OVER (PARTITION BY auction ORDER BY ts RANGE BETWEEN INTERVAL '0.2' "
             "SECOND PRECEDING AND CURRENT ROW) AS d, MIN(price) OVER (PARTITION BY auction ORDER BY ts RANGE "
             "BETWEEN INTERVAL '0.2' SECOND PRECEDING AND CURRENT ROW) AS lo FROM bids WHERE price > 10",
     "SELECT ts, price - avg(price) OVER w AS d, min(price) OVER w AS lo FROM bids WHERE price > 10 "
     "WINDOW w AS (PARTITION BY auction ORDER BY ts RANGE BETWEEN 200 PRECEDING AND CURRENT ROW)"),
    ("rows", "SELECT * FROM (SELECT ts, auction, COUNT(price) OVER (ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND "
             "CURRENT ROW) AS c FROM bids) WHERE c > 100", None),
    ("rows", "SELECT ts, CASE WHEN AVG(price) OVER (PARTITION BY auction ORDER BY ts ROWS BETWEEN 2 PRECEDING AND "
             "CURRENT ROW) > 50.0333 THEN 'hi' ELSE 'lo' END AS band, ch FROM bids", None),
]

#: Every case: ``(kind, streaming SQL, DuckDB SQL)``; kind ``"rows"`` or ``"changelog"``.
CASES = (
    [("rows", f"SELECT ts, {e} AS x FROM bids", f"SELECT ts, {d or e} AS x FROM bids") for e, d in EXPRESSIONS]
    + [("rows", f"SELECT ts, auction, price, ch FROM bids WHERE {p}", f"SELECT ts, auction, price, ch FROM bids "
        f"WHERE {d or p}") for p, d in PREDICATES]
    + [("rows", q, d or q) for q, d in WINDOWS]
    + [("changelog", q, d or q) for q, d in UPDATING]
    + [("changelog" if "window_start" not in q else "rows", q, d or q) for q, d in RANKED]
    + [("changelog" if "GROUP BY" in q else "rows", q, d or q) for q, d in JOINS]
    + [(kind, q, d or q) for kind, q, d in COMPOSED]
    + [(kind, q, d or q) for kind, q, d in AFTER_OPERATORS]
    + [(kind, q, d or q) for kind, q, d in OVER_AGGREGATES]
)
