"""The Lua script that applies one event to the online store (see `features.online`).

The spec's primitives are rendered into the script as a table, so a script belongs to one spec
version. One call applies a batch of
events in order (a single event is a batch of one), atomically. Fields read are cached in a Lua
table for the whole batch and written back once per entity, so a batch costs Redis little more
than its distinct fields.

    KEYS              every entity hash and dedupe hash the batch touches, once each
    ARGV[1]           dedupe marker ttl (ms), then the number of events
    then per event    dedupe hash index (0: no dedupe; -1 - index: not counted), the indexes
                      of the hashes of the hour before and the hour after (0: none), event_id,
                      time (ms), number of entities (negated: a restatement, applied only to
                      the entities that still hold what it takes back, `features.restate`),
      per entity      key index, entity index, logical ttl (ms), Redis ttl (ms), number of ops,
                      and that many (primitive id, argument) pairs

Dedupe markers are fields of one hash per hour of event time (`<prefix>:seen:<hour>`), kept for
the dedupe ttl; a marker's value is the event's time (a bulk load's markers say '1'). An event
whose marker is in the hour before or after its own is a duplicate too: a payment sent without
`ts` takes the clock's time, and its retry can fall in the next hour (or, on a process whose
clock is behind, the one before).
Returns the number of events applied (duplicates are skipped). On a Redis
Cluster an event's entities can sit in several slots, and a script's keys must share one: the
event is then applied by one call per slot (`features.cluster`), each with its own dedupe
marker, and only the call of its first entity counts it (the others pass the index negated).
"""

from __future__ import annotations

from features.spec import SpecPlan

_BODY = r"""
local C = {}

local function int(n) return string.format('%d', n) end

local function fresh(complete)
  -- f: fields read or written (false = absent); dirty: fields to write back; head: the parsed
  -- head, serialised at flush.
  return {f = {}, dirty = {}, complete = complete}
end

local function entry(key)
  local e = C[key]
  if not e then
    -- A hash that does not exist yet answers every read without asking Redis.
    e = fresh(redis.call('EXISTS', key) == 0)
    C[key] = e
  end
  return e
end

local function get(key, f)
  local e = C[key]
  local v = e.f[f]
  if v == nil then
    if e.complete then return nil end
    v = redis.call('HGET', key, f)
    e.f[f] = v
  end
  if v == false then return nil end
  return v
end

local function set(key, f, v)
  local e = C[key]
  e.f[f] = v
  e.dirty[f] = true
end

local function del(key, f)
  local e = C[key]
  e.f[f] = false
  e.dirty[f] = true
end

local function serialise(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = int(k) .. '=' .. int(v) end
  return table.concat(parts, ';')
end

local function flush(key)
  local e = C[key]
  if e.head_dirty then
    local text = serialise(e.head)
    if text ~= '' then set(key, 'h', text) else del(key, 'h') end
    e.head_dirty = false
  end
  local sets, dels = {}, {}
  for f in pairs(e.dirty) do
    local v = e.f[f]
    if v then
      sets[#sets + 1] = f
      sets[#sets + 1] = v
      if #sets >= 1000 then redis.call('HSET', key, unpack(sets)); sets = {} end
    else
      dels[#dels + 1] = f
      if #dels >= 1000 then redis.call('HDEL', key, unpack(dels)); dels = {} end
    end
  end
  if #sets > 0 then redis.call('HSET', key, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
  e.dirty = {}
end

local function parse(text, into)
  if text then
    for k, v in string.gmatch(text, '(%d+)=(%-?%d+)') do into[tonumber(k)] = tonumber(v) end
  end
  return into
end

-- The head: contributions of the events at exactly time t ('pid=v;...' in Redis).
local function head(key)
  local e = C[key]
  if not e.head then e.head = parse(get(key, 'h'), {}) end
  return e.head
end

local function add_head(key, pid, kind, v)
  local h = head(key)
  local cur = h[pid]
  if cur == nil then
    h[pid] = v
  elseif kind == 'm' then
    if v > cur then h[pid] = v end
  else
    h[pid] = cur + v
  end
  C[key].head_dirty = true
end

-- Add v to bucket b of a primitive's bucket list and drop the buckets below bound. The list is
-- 'b=v;b=v;...' newest first, so the common cases (the newest bucket grows, a new bucket starts,
-- the oldest expires) touch only its two ends; a late event's bucket goes through a full parse.
local function add_bucket(key, pid, kind, b, v, bound)
  local f = int(pid)
  local cur = get(key, f) or ''
  if b >= bound then
    local eq = string.find(cur, '=', 1, true)
    local first = eq and tonumber(string.sub(cur, 1, eq - 1))
    if not first or b > first then
      local item = int(b) .. '=' .. int(v)
      if cur == '' then cur = item else cur = item .. ';' .. cur end
    elseif b == first then
      local semi = string.find(cur, ';', eq, true)
      local old = tonumber(string.sub(cur, eq + 1, (semi or 0) - 1))
      if kind == 'm' then
        if v > old then old = v end
      else
        old = old + v
      end
      cur = int(b) .. '=' .. int(old) .. (semi and string.sub(cur, semi) or '')
    else
      local t = parse(cur, {})
      local old = t[b]
      if old == nil then
        t[b] = v
      elseif kind == 'm' then
        t[b] = math.max(old, v)
      else
        t[b] = old + v
      end
      local order = {}
      for k in pairs(t) do order[#order + 1] = k end
      table.sort(order, function(x, y) return x > y end)
      local parts = {}
      for i, k in ipairs(order) do parts[i] = int(k) .. '=' .. int(t[k]) end
      cur = table.concat(parts, ';')
    end
  end
  while cur ~= '' do
    local semi = string.match(cur, '^.*();')
    local tail = semi and string.sub(cur, semi + 1) or cur
    local eq = string.find(tail, '=', 1, true)
    if tonumber(string.sub(tail, 1, eq - 1)) >= bound then break end
    if semi then cur = string.sub(cur, 1, semi - 1) else cur = '' end
  end
  if cur == '' then del(key, f) else set(key, f, cur) end
end

-- Distinct values no window can reach are dropped every half horizon, in one scan, once the
-- hash has grown past 64 fields (below that, stale values cost less than scanning for them).
local function trim_distinct(key, ent, h, ts)
  if #DISTINCT[ent] == 0 or redis.call('HLEN', key) < 64 then return end
  local due = false
  for _, pid in ipairs(DISTINCT[ent]) do
    local every = math.ceil(P[pid].hor / 2)
    if math.floor(ts / every) > math.floor(h / every) then due = true end
  end
  if not due then return end
  flush(key)
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', key, cursor, 'MATCH', 'd*', 'COUNT', 1000)
    cursor = r[1]
    local kv = r[2]
    for j = 1, #kv, 2 do
      local f = kv[j]
      local p = P[tonumber(string.sub(f, 2, string.find(f, ':', 1, true) - 1))]
      local v = kv[j + 1]
      local sep = string.find(v, ',', 1, true)
      local last = tonumber(sep and string.sub(v, 1, sep - 1) or v)
      if last < math.floor((ts - p.hor) / p.hop) * p.hop then del(key, f) end
    end
  until cursor == '0'
  flush(key)
end

local function times(key, f, ts, tsS)
  local cur = get(key, f)
  if not cur then set(key, f, tsS); return end
  local sep = string.find(cur, ',', 1, true)
  local lastS = sep and string.sub(cur, 1, sep - 1) or cur
  local last = tonumber(lastS)
  if ts > last then
    set(key, f, tsS .. ',' .. lastS)
  elseif ts < last then
    local prev = sep and tonumber(string.sub(cur, sep + 1)) or nil
    if (not prev) or ts > prev then set(key, f, lastS .. ',' .. tsS) end
  end
end

local function lastval(key, f, ts, tsS, arg)
  local cur = get(key, f)
  if not cur then set(key, f, tsS .. US .. arg); return end
  local parts = {}
  for piece in string.gmatch(cur, '[^' .. US .. ']+') do parts[#parts + 1] = piece end
  local last = tonumber(parts[1])
  if ts > last then
    set(key, f, tsS .. US .. arg .. US .. parts[1] .. US .. parts[2])
  elseif ts == last then
    local rest = ''
    if parts[3] then rest = US .. parts[3] .. US .. parts[4] end
    set(key, f, parts[1] .. US .. arg .. rest)
  elseif (not parts[3]) or ts >= tonumber(parts[3]) then
    set(key, f, parts[1] .. US .. parts[2] .. US .. tsS .. US .. arg)
  end
end

-- What a count or sum holds of the events at time ts: the head when ts is the entity's latest
-- time, else ts's bucket (a restatement takes back only what is there).
local function held(key, pid, ts)
  local touched = tonumber(get(key, 't'))
  if not touched or ts > touched then return 0 end
  if ts == touched then return head(key)[pid] or 0 end
  return parse(get(key, int(pid)), {})[math.floor(ts / P[pid].hop)] or 0
end

-- Whether an entity holds every contribution a restatement's ops take back (their negative
-- values): not when it expired, was lost or was evicted and started again meanwhile.
local function holds(key, ts, a, nops)
  if not get(key, 't') then return false end
  for i = 0, nops - 1 do
    local v = tonumber(ARGV[a + 2 * i + 1])
    if v < 0 and held(key, tonumber(ARGV[a + 2 * i]), ts) < -v then return false end
  end
  return true
end

local function apply(key, ent, ts, tsS, ttl, a, nops)
  local touched = tonumber(get(key, 't'))
  if touched and ts - touched >= ttl then
    redis.call('DEL', key)
    C[key] = fresh(true)
    touched = nil
  end
  local late = false
  if touched and ts > touched then
    local h = head(key)
    if next(h) then
      for pid, v in pairs(h) do
        local p = P[pid]
        local bound = math.floor((ts - p.hor) / p.hop)
        add_bucket(key, pid, p.k, math.floor(touched / p.hop), v, bound)
      end
      C[key].head = {}
      C[key].head_dirty = true
    end
    trim_distinct(key, ent, touched, ts)
  elseif touched and ts < touched then
    late = true
  end
  for _ = 1, nops do
    local pid = tonumber(ARGV[a])
    local arg = ARGV[a + 1]
    a = a + 2
    local p = P[pid]
    local kind = p.k
    if kind == 'c' or kind == 's' or kind == 'm' then
      local v = tonumber(arg)
      if late then
        local bound = math.floor((touched - p.hor) / p.hop)
        add_bucket(key, pid, kind, math.floor(ts / p.hop), v, bound)
      else
        add_head(key, pid, kind, v)
      end
    elseif kind == 'd' then
      times(key, 'd' .. pid .. ':' .. arg, ts, tsS)
    elseif kind == 'l' then
      times(key, 'l' .. pid, ts, tsS)
    elseif kind == 'f' then
      local cur = get(key, 'f' .. pid)
      if (not cur) or ts < tonumber(cur) then set(key, 'f' .. pid, tsS) end
    elseif kind == 'v' then
      lastval(key, 'v' .. pid, ts, tsS, arg)
    end
  end
  if (not touched) or ts > touched then set(key, 't', tsS) end
  return a
end

local dedupe_ttl = ARGV[1]
local n = tonumber(ARGV[2])
local a = 3
local applied = 0
local rttls = {}
local expired = {}
for _ = 1, n do
  local seen = tonumber(ARGV[a])
  -- Negative: one share of an event split over cluster slots, applied but not counted here.
  local counted = seen >= 0
  if not counted then seen = -seen - 1 end
  local before = tonumber(ARGV[a + 1])
  local after = tonumber(ARGV[a + 2])
  local event_id = ARGV[a + 3]
  local tsS = ARGV[a + 4]
  local ts = tonumber(tsS)
  local nent = tonumber(ARGV[a + 5])
  -- Negative: a restatement (`features.restate`), for the entities that still have state only.
  local known_only = nent < 0
  if known_only then nent = -nent end
  a = a + 6
  local unseen = true
  if seen > 0 then
    -- Marked in a neighbouring hour: the same event sent again at another clock's time.
    if (before > 0 and redis.call('HEXISTS', KEYS[before], event_id) == 1)
        or (after > 0 and redis.call('HEXISTS', KEYS[after], event_id) == 1) then
      unseen = false
    else
      unseen = redis.call('HSETNX', KEYS[seen], event_id, tsS) == 1
    end
    if unseen and not expired[seen] then
      redis.call('PEXPIRE', KEYS[seen], dedupe_ttl)
      expired[seen] = true
    end
  end
  if unseen and counted then applied = applied + 1 end
  for _ = 1, nent do
    local k = tonumber(ARGV[a])
    local ent = tonumber(ARGV[a + 1])
    local ttl = tonumber(ARGV[a + 2])
    local nops = tonumber(ARGV[a + 4])
    local live = unseen
    if live then
      entry(KEYS[k])
      live = not known_only or holds(KEYS[k], ts, a + 5, nops)
    end
    if live then
      rttls[k] = ARGV[a + 3]
      a = apply(KEYS[k], ent, ts, tsS, ttl, a + 5, nops)
    else
      a = a + 5 + 2 * nops
    end
  end
end
for k, rttl in pairs(rttls) do
  flush(KEYS[k])
  redis.call('PEXPIRE', KEYS[k], rttl)
end
return applied
"""


def render_script(plan: SpecPlan) -> str:
    """The apply script with the spec's primitive table (hop and horizon per primitive)."""
    rows = [f"[{p.pid}]={{k='{p.kind}',hop={p.hop},hor={p.horizon}}}" for p in plan.primitives]
    distinct = []
    for name in plan.model.entities:
        pids = [str(p.pid) for p in plan.primitives if p.entity == name and p.kind == "d"]
        distinct.append("{" + ",".join(pids) + "}")
    header = (
        f"-- Arbiter online store, feature spec {plan.name} version {plan.version}\n"
        "local US = '\\31'\n"
        f"local P = {{{','.join(rows)}}}\n"
        f"local DISTINCT = {{{','.join(distinct)}}}\n"
    )
    return header + _BODY
