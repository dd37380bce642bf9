//! The Lua scripts the fleet runs in Redis, each atomic there: a request's
//! claim and its card's check-and-count in one, a card's give-back, and a
//! claim given up or looked at before a reversal.

/// A request's reply-path call in one round trip: claims its acquirer keys
/// (the claim below) and, when the claim is this node's, checks and counts
/// the approval its card actors made (the reserve below), atomically.
///
/// ARGV[1]: 1 to claim KEYS[1], else 0 (a request without acquirer keys);
/// ARGV[2..4]: the claim's arguments; ARGV[5]: 1 to count an approval, else
/// 0 (a decline touches no velocity); ARGV[6..26]: the reserve's arguments.
/// The keys are the claim's (when claimed), then the reserve's (when
/// counted). An approval is counted only when the claim is this node's (won
/// afresh, or taken over): a request another node holds pending or answered
/// leaves the card's velocity in Redis untouched, and its node gives back
/// what its actors reserved.
///
/// Returns `{claim, velocity}`: the claim's reply (nil when not claimed or
/// won afresh), and the reserve's, or -2 when nothing was counted.
pub(super) const SETTLE_LUA: &str = r"
-- Claims a request's acquirer keys for this node, or reads who has them
-- (see `claims.rs`). key: the request's key. a: the index of how long a
-- claim may stay pending (ms); a+1: how long the key is kept (ms), the
-- duplicate window; a+2: since when (ms, Redis's clock) Redis has held the
-- fleet's claims, as the node last read `d:since` (0: unknown).
--
-- A pending claim is `pending:<deadline>`, by Redis's own clock, and
-- outlives its deadline, so a claim taken over after it can be told from a
-- fresh one. Returns false for a fresh claim that vouches no node answered
-- the keys (absent, and Redis has held the claims for a whole window),
-- `taken-over` for one that cannot vouch (a lapsed claim, or keys Redis may
-- have lost), `pending` while another node's claim stands, `reversed` when
-- a reversal found no original first (REVERSING_LUA; not claimed), or that
-- node's answer.
local function claim(key, a)
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local held = redis.call('GET', key)
  local vouched = false
  if held then
    local deadline = string.match(held, '^pending:(%d+)$')
    if deadline then
      if tonumber(deadline) > now_ms then return 'pending' end
    elseif held ~= 'lapsed' then
      return held
    end
  else
    local since = tonumber(ARGV[a + 2])
    vouched = since > 0 and now_ms - since >= tonumber(ARGV[a + 1])
  end
  local deadline = string.format('%d', now_ms + tonumber(ARGV[a]))
  redis.call('SET', key, 'pending:' .. deadline, 'PX', ARGV[a + 1])
  if vouched then return false end
  return 'taken-over'
end

-- Checks and counts one approval in every window, or declines without
-- counting anything. card: the card's hash; built: `v:built`. From ARGV[a]:
-- amount; how long the hash lives (ms); then per window (minute, hour, day):
-- its tag, current bucket, bucket count, count_max (-1: none), amount_max
-- (-1: none), bucket length (s); last (a+20), the generation `card` belongs
-- to. Returns 0 (counted), 65 (count limit), 61 (amount limit), or -1 when
-- `v:built` no longer names that generation: Redis lost its keys since the
-- node last looked, and counting in the lost (empty) generation would hand
-- the card's whole limit out again.
--
-- The card's fields are walked once: each is summed into the window whose
-- buckets hold it, or is stale. (Building the name of every bucket of every
-- window and looking each up, 30 a call, cost Redis about 60% more time.)
-- The current buckets are written in one HSET of the values read plus this
-- approval: the script runs alone, so nothing changes them in between.
--
-- A node counts in the buckets of its own clock (the instant its record is
-- journaled with, so a give-back finds them), but stale fields are pruned
-- by Redis's own clock as well: a node whose clock runs ahead must not
-- delete buckets the other nodes still count. A field is pruned only when
-- it has left the window by both clocks.
local function reserve(card, built, a)
  if redis.call('GET', built) ~= ARGV[a + 20] then return -1 end
  local amount = tonumber(ARGV[a])
  local redis_now_s = tonumber(redis.call('TIME')[1])
  local window = {}
  local order = {}
  local arg = a + 2
  for w = 1, 3 do
    local now = tonumber(ARGV[arg + 1])
    local buckets = tonumber(ARGV[arg + 2])
    local bucket_s = tonumber(ARGV[arg + 5])
    local redis_oldest = math.floor(redis_now_s / bucket_s) - buckets + 1
    local this = {
      now = now,
      first = now - buckets + 1,
      oldest = math.min(now - buckets + 1, redis_oldest),
      count_max = tonumber(ARGV[arg + 3]),
      amount_max = tonumber(ARGV[arg + 4]),
      count = 0,
      sum = 0,
      prefix = ARGV[arg] .. ':' .. ARGV[arg + 1] .. ':',
    }
    window[ARGV[arg]] = this
    order[w] = this
    arg = arg + 6
  end
  local fields = redis.call('HGETALL', card)
  local held = {}
  local stale = {}
  for i = 1, #fields, 2 do
    local field = fields[i]
    local value = tonumber(fields[i + 1])
    held[field] = value
    local tag, bucket, kind = string.match(field, '^(%a):(%d+):(%a)$')
    local this = tag and window[tag]
    if this then
      bucket = tonumber(bucket)
      if bucket < this.oldest then
        stale[#stale + 1] = field
      elseif bucket >= this.first and bucket <= this.now then
        if kind == 'c' then
          this.count = this.count + value
        elseif kind == 'a' then
          this.sum = this.sum + value
        end
      end
    end
  end
  for w = 1, 3 do
    local this = order[w]
    if this.count_max >= 0 and this.count + 1 > this.count_max then return 65 end
    if this.amount_max >= 0 and this.sum + amount > this.amount_max then return 61 end
  end
  local counted = {}
  for w = 1, 3 do
    local prefix = order[w].prefix
    counted[#counted + 1] = prefix .. 'c'
    counted[#counted + 1] = string.format('%d', (held[prefix .. 'c'] or 0) + 1)
    counted[#counted + 1] = prefix .. 'a'
    counted[#counted + 1] = string.format('%d', (held[prefix .. 'a'] or 0) + amount)
  end
  redis.call('HSET', card, unpack(counted))
  if #stale > 0 then redis.call('HDEL', card, unpack(stale)) end
  redis.call('PEXPIRE', card, ARGV[a + 1])
  return 0
end

local held = false
local keys = 1
if ARGV[1] == '1' then
  held = claim(KEYS[1], 2)
  keys = 2
end
local velocity = -2
if ARGV[5] == '1' and (held == false or held == 'taken-over') then
  velocity = reserve(KEYS[keys], KEYS[keys + 1], 6)
end
return {held, velocity}
";

/// Gives one approval back, or part of one: KEYS[1] is the card's hash;
/// ARGV[1] the amount; ARGV[2] the count to take (1 for a whole approval, 0
/// for a partial reversal, after which part of it stands); then per window
/// the prefix (`m:<bucket>:`) of the bucket the original was counted in.
/// Never below zero, and a bucket already pruned is not brought back.
pub(super) const GIVE_BACK_LUA: &str = r"
local amount = tonumber(ARGV[1])
local uncount = tonumber(ARGV[2])
for i = 3, #ARGV do
  local held = redis.call('HMGET', KEYS[1], ARGV[i] .. 'c', ARGV[i] .. 'a')
  if held[1] then
    local count = tonumber(held[1]) or 0
    local sum = tonumber(held[2]) or 0
    redis.call('HSET', KEYS[1], ARGV[i] .. 'c', math.max(count - uncount, 0),
      ARGV[i] .. 'a', math.max(sum - amount, 0))
  end
end
return 0
";

/// Reads since when Redis has held the fleet's claims, setting it when it
/// is missing (Redis is new, or lost its keys). KEYS[1]: `d:since`; ARGV[1]:
/// how far before now to set it (ms): the duplicate window when the journal
/// holds no request a claim could miss, else 0. Returns the value (ms,
/// Redis's clock).
pub(super) const SINCE_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = string.format('%d', math.max(now_ms - tonumber(ARGV[1]), 1))
redis.call('SET', KEYS[1], since)
return since
";

/// Gives up a pending claim without an answer: it becomes `lapsed` for the
/// rest of the key's life. KEYS[1]: the request's key. An answer already
/// there (another node's, after this claim's deadline) stays.
pub(super) const RELEASE_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if held and ttl > 0 and string.match(held, '^pending:') then
  redis.call('SET', KEYS[1], 'lapsed', 'PX', ttl)
end
return 0
";

/// Before a reversal looks for its original: whether a node holds the
/// original's keys pending now (1: the reversal waits for its answer) or
/// not (0). Keys no node holds or answered (absent, lapsed, or pending past
/// their deadline) are marked `reversed` for the duplicate window, so an
/// original not yet claimed (between its arrival at a node and its claim,
/// which comes after the node's decision), or whose claim lapsed, is not
/// decided after its reversal found nothing: its claim reads `reversed`.
/// KEYS[1]: the original's key. ARGV[1]: how long the mark is kept (ms).
pub(super) const REVERSING_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  local deadline = string.match(held, '^pending:(%d+)$')
  if not deadline and held ~= 'lapsed' then return 0 end
  if deadline then
    local time = redis.call('TIME')
    local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    if tonumber(deadline) > now_ms then return 1 end
  end
end
redis.call('SET', KEYS[1], 'reversed', 'PX', ARGV[1])
return 0
";
