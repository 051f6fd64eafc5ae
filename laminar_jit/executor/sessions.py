"""Generated code of session windows: per-key lists of open sessions, extended and merged by rows."""

from __future__ import annotations

from ..kernels.sessions import OFF_LIST
from .core import NULL_KEY, ROW_WATERMARK, indent
from .slots import due_entries, finalizers, reset_lines

__all__ = ["session_fire", "session_update"]

def session_update(gen, nid, params, loop, ts_expr, key_expr, agg_code, aggs, fields_by_agg, state_names):
    """Fold rows into per-key sessions, extending and merging the open ones a row touches."""
    buckets, keys, meta, free, aux, sstart, send, snext, kb, kk, km, kf, head = state_names[:13]
    merges = [agg.blueprint.merge.format(**fnames) for (_, agg), fnames in zip(aggs, fields_by_agg)]
    merge_code = "\n".join(indent(m, 24) for m in merges + reset_lines(aggs, fields_by_agg, slot_expr="a"))
    gen.funcs.append(f'''
@njit
def window_{nid}_update({params}):
    """Session window node {nid}: fold rows into sessions; record late rows."""
{gen.setting_lines[nid]}
    n_late = 0
    seq = {aux}[0]
    low = {aux}[1]  # lower bound of the open sessions' ends
    serial = {aux}[3]
    {loop}
        t = {ts_expr}
        {ROW_WATERMARK}
        {key_expr}
        ks = ht_find({kb}, {kk}, {km}, k, np.int64(0))
        hit = np.int64(-1)
        if ks >= 0:
            # every open session the row is closer than the gap to joins it (or touches, with touch = 1)
            prev = np.int64(-1)
            cur = {head}[ks]
            while cur >= 0:
                nxt = {snext}[cur]
                if {send}[cur] + lateness <= rw:
                    # closed for good (watermarks only grow): off the list, so later rows of the key do not walk
                    # it again; the fire pass after these rows emits it (rows of a key with many closed sessions
                    # waiting for the fire walked them all: sessions per auction, a fire every 16 K rows)
                    if prev < 0:
                        {head}[ks] = nxt
                    else:
                        {snext}[prev] = nxt
                    {snext}[cur] = {OFF_LIST}  # (kernels.sessions.OFF_LIST)
                elif {sstart}[cur] - gap < t + touch and t < {send}[cur] + touch:
                    if hit < 0:
                        hit = cur
                        prev = cur
                    else:  # the row bridges two sessions: fold ``cur`` into ``hit``
                        d = hit
                        a = cur
{merge_code}
                        if {sstart}[a] < {sstart}[d]:
                            {sstart}[d] = {sstart}[a]
                        if {send}[a] > {send}[d]:
                            {send}[d] = {send}[a]
                        if prev < 0:
                            {head}[ks] = nxt
                        else:
                            {snext}[prev] = nxt
                        {snext}[a] = -1
                        ht_delete({buckets}, {keys}, {meta}, {free}, a)
                else:
                    prev = cur
                cur = nxt
        if hit < 0:
            if t + gap + lateness <= rw:  # its own session would already have been emitted
                late_out[n_late] = i
                n_late += 1
                continue
            if ks < 0:
                ks = ht_find_or_insert({kb}, {kk}, {km}, {kf}, k, np.int64(0))
            hit = ht_find_or_insert({buckets}, {keys}, {meta}, {free}, k, serial)
            serial += 1
            {sstart}[hit] = t
            {send}[hit] = t + gap
            {snext}[hit] = {head}[ks]
            {head}[ks] = hit
        else:
            if t < {sstart}[hit]:
                {sstart}[hit] = t
            if t + gap > {send}[hit]:
                {send}[hit] = t + gap
        if {send}[hit] < low:
            low = {send}[hit]
        s = hit
        q = seq
        seq += 1
{chr(10).join(agg_code)}
    {aux}[0] = seq
    {aux}[1] = low
    {aux}[3] = serial
    return n_late
''')


def session_fire(gen, node, aggs, fields_by_agg, state_names):
    """Emit sessions whose end + lateness the watermark reached, ordered by end then key."""
    nid = node.id
    buckets, keys, meta, free, aux, sstart, send, snext, kb, kk, km, kf, head = state_names[:13]
    allocs, final, rets = finalizers(node, aggs, fields_by_agg)
    resets = reset_lines(aggs, fields_by_agg)
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, settings, {", ".join(state_names)}):
    """Session window node {nid}: emit due sessions and free their slots."""
{gen.setting_lines[nid]}
{due_entries(state_names, send, "lateness")}
    win_start = empty(cnt, np.int64)
    win_end = empty(cnt, np.int64)
    key = empty(cnt, np.int64)
    key_valid = empty(cnt, np.bool_)
{indent(allocs, 4)}
    for o in range(cnt):
        s = fired[order[o]]
        win_start[o] = {sstart}[s]
        win_end[o] = {send}[s]
        key[o] = {keys}[s, 0]
        key_valid[o] = key[o] != {NULL_KEY}
{chr(10).join(indent(f, 8) for f in final)}
    unlink_sessions(fired, {keys}, {kb}, {kk}, {km}, {kf}, {head}, {snext})
    for o in range(cnt):
        s = fired[o]
{chr(10).join(indent(r, 8) for r in resets)}
    ht_delete_many({buckets}, {keys}, {meta}, {free}, fired[:cnt], kept[:n_kept])
    return win_start, win_end, key, key_valid, {rets}
''')
