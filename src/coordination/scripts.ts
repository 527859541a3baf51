/**
 * The Lua scripts the fleet runs in Redis. Each runs atomically, reads time from Redis (`TIME`, one
 * clock for the whole fleet), and validates what it reads: a key of the wrong type or a value that is
 * not a finite number is replaced, never trusted.
 *
 * Membership: a sorted set of member ids scored by lease expiry (Redis ms). Expired members are removed;
 * scores beyond one lease from now cannot have been written by a member and are removed too.
 */

const NUM = `
local function num(v)
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function members(key, id, now, lease)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', key) end
  redis.call('ZADD', key, now + lease, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', key, '(' .. (now + lease), '+inf')
  redis.call('PEXPIRE', key, lease * 2)
  return redis.call('ZCARD', key)
end
`;

/**
 * Renews this member's lease. KEYS: members. ARGV: member id, lease ms. Returns the live members.
 */
export const HEARTBEAT = `${NUM}
local lease = num(ARGV[2]) or 5000
return members(KEYS[1], ARGV[1], nowMs(), lease)
`;

/**
 * Takes up to `want` permits from a target's fleet-wide token bucket (capacity `cap`, refilled at `rate`
 * permits per ms; starts full) and renews the member's lease. KEYS: bucket, members. ARGV: rate per ms,
 * capacity, want, member id, lease ms. Returns { granted, live members }.
 */
export const TAKE_PERMITS = `${NUM}
local rate = num(ARGV[1]) or 0
local cap = num(ARGV[2]) or 1
local want = math.floor(num(ARGV[3]) or 0)
local lease = num(ARGV[5]) or 5000
local now = nowMs()
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]); kind = 'none' end
local tokens, ts
if kind == 'none' then
  tokens = cap
  ts = now
else
  local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  tokens = num(v[1]) or 0
  ts = num(v[2]) or now
end
if tokens > cap then tokens = cap end
if tokens < 0 then tokens = 0 end
if ts > now then ts = now end
tokens = math.min(cap, tokens + (now - ts) * rate)
local granted = math.floor(math.min(want, tokens))
if granted < 0 then granted = 0 end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
local full = 60000
if rate > 0 then full = math.ceil(cap / rate) end
redis.call('PEXPIRE', KEYS[1], full + lease)
return { granted, members(KEYS[2], ARGV[4], now, lease) }
`;

/**
 * Leases a target's connection slots for one member. The slots hash maps each member id to
 * `held:wanted:expiry` (expiry in Redis ms); entries expired, malformed, above the budget or expiring
 * beyond one lease from now are removed (a killed process's slots come back within one lease).
 *
 * The member is granted `min(want, budget − slots held by the others)`; while another member wants
 * more than it holds, at most the fair share `max(1, ⌊budget / live holders⌋)`. It is recorded as
 * holding `max(hold, grant)`: connections it has open count even when the fleet's budget is spent, so
 * nobody is granted beyond the budget. KEYS: slots, members. ARGV: budget, hold, want, member id, lease
 * ms. Returns { grant, live members }.
 */
export const LEASE_SLOTS = `${NUM}
local budget = math.floor(num(ARGV[1]) or 0)
local hold = math.floor(num(ARGV[2]) or 0)
local want = math.floor(num(ARGV[3]) or 0)
local id = ARGV[4]
local lease = num(ARGV[5]) or 5000
if hold < 0 then hold = 0 end
if want < hold then want = hold end
local now = nowMs()
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local all = redis.call('HGETALL', KEYS[1])
local others, short, live = 0, 0, 1
for i = 1, #all, 2 do
  local other = all[i]
  if other ~= id then
    local h, w, exp = string.match(all[i + 1], '^(%d+):(%d+):(%d+)$')
    h = tonumber(h); w = tonumber(w); exp = tonumber(exp)
    if h == nil or w == nil or exp == nil or exp <= now or exp > now + lease or h > budget then
      redis.call('HDEL', KEYS[1], other)
    else
      others = others + h
      live = live + 1
      if w > h then short = short + (w - h) end
    end
  end
end
local free = budget - others
if free < 0 then free = 0 end
local grant = math.min(want, free)
if short > 0 then
  local fair = math.max(1, math.floor(budget / live))
  if grant > fair then grant = fair end
end
local record = math.max(hold, grant)
if record > 0 or want > 0 then
  redis.call('HSET', KEYS[1], id, string.format('%d:%d:%d', record, want, math.floor(now + lease)))
else
  redis.call('HDEL', KEYS[1], id)
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return { grant, members(KEYS[2], id, now, lease) }
`;

const BREAKER_STATE = `
local function breakerState(key)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
  local v = redis.call('HMGET', key, 'epoch', 'open')
  local epoch = num(v[1])
  if epoch == nil or epoch < 0 or epoch ~= math.floor(epoch) or epoch > 1e15 then epoch = 0 end
  return epoch, v[2] == '1'
end
`;

/**
 * One process's view of a target's breaker, sent and read back in one call (and its membership renewed).
 * KEYS: breaker state, votes, members. ARGV: member id, lease ms, vote (1 = this process's breaker is not
 * closed), the epoch the process last saw (-1: none yet), quorum. A vote from an older epoch is stale (cast
 * before a recovery the process has not heard of yet) and is dropped. The target opens fleet-wide when the
 * live votes reach the quorum; with no live vote left (their members died) it is up again.
 * Returns { votes, live members, open (0/1), epoch }.
 */
export const BREAKER_SYNC = `${NUM}${BREAKER_STATE}
local lease = num(ARGV[2]) or 5000
local vote = ARGV[3] == '1'
local seen = num(ARGV[4]) or -1
local quorum = math.max(1, math.floor(num(ARGV[5]) or 1))
local now = nowMs()
local live = members(KEYS[3], ARGV[1], now, lease)
local epoch, open = breakerState(KEYS[1])
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', KEYS[2]) end
if vote and (seen < 0 or seen == epoch) then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '(' .. (now + lease), '+inf')
local votes = redis.call('ZCARD', KEYS[2])
if votes > 0 then redis.call('PEXPIRE', KEYS[2], lease * 2) end
if not open and votes >= quorum then open = true end
if open and votes == 0 then open = false; epoch = epoch + 1 end
redis.call('HSET', KEYS[1], 'epoch', tostring(epoch), 'open', open and '1' or '0')
redis.call('PEXPIRE', KEYS[1], lease * 4)
return { votes, live, open and 1 or 0, epoch }
`;

/**
 * A recovery probe succeeded: the target is up fleet-wide. KEYS: breaker state, votes, probe lock.
 * ARGV: lease ms. Starts a new epoch (every earlier vote is stale), drops the votes and the lock.
 * Returns the new epoch.
 */
export const BREAKER_UP = `${NUM}${BREAKER_STATE}
local lease = num(ARGV[1]) or 5000
local epoch = breakerState(KEYS[1]) + 1
redis.call('HSET', KEYS[1], 'epoch', tostring(epoch), 'open', '0')
redis.call('PEXPIRE', KEYS[1], lease * 4)
redis.call('DEL', KEYS[2], KEYS[3])
return epoch
`;
